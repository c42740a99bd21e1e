-- Event organisers: a device (a sensor at an event) belongs to an operator,
-- who reads its plays and usage reports, as a station's operator does.
ALTER TABLE devices ADD COLUMN owner_id INTEGER REFERENCES users (id) ON DELETE SET NULL;
CREATE INDEX devices_owner ON devices (owner_id);
