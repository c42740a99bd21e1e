-- Event organisers: a device (a sensor at an event) belongs to an operator,
-- who reads its plays and usage reports, as a station's operator does.
ALTER TABLE devices
    ADD COLUMN owner_id BIGINT NULL,
    ADD CONSTRAINT devices_owner_fk FOREIGN KEY (owner_id) REFERENCES users (id) ON DELETE SET NULL;
