-- Sensors over TCP (protocol v2): the verifier of a device's challenge-
-- response login (SHA-256 of the key derived from its secret, 64 hex
-- digits). Null for a device whose secret was made before: rotate it.
ALTER TABLE devices ADD COLUMN login_verifier TEXT;
