-- Configurations: the current value of every key, and every version of it.
-- Version n of a key is version n of stream 'config:<key>'. A secret's value
-- column holds the JSON string "***"; its ciphertext (AES-256-GCM, see
-- eventkernel.secrets) is all the file holds of it.
CREATE TABLE IF NOT EXISTS configurations (
    key         TEXT PRIMARY KEY,
    value       TEXT,                  -- JSON ("***" for a secret)
    value_type  TEXT NOT NULL,         -- string | integer | float | boolean | json
    description TEXT,
    is_secret   INTEGER NOT NULL,      -- 1: value encrypted, never stored in clear
    ciphertext  TEXT,                  -- secrets only: 'ek1:<key id>:<base64>'
    key_id      TEXT,                  -- secrets only: the id of the key that decrypts it
    version     INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    position    INTEGER NOT NULL
) STRICT;

CREATE TABLE IF NOT EXISTS configuration_history (
    key         TEXT NOT NULL,
    version     INTEGER NOT NULL,
    operation   TEXT NOT NULL,         -- set | delete | reencrypt
    value       TEXT,                  -- JSON as of this version ("***" for a secret; NULL after a delete)
    value_type  TEXT,
    description TEXT,
    is_secret   INTEGER NOT NULL,
    ciphertext  TEXT,
    changed_at  INTEGER NOT NULL,
    position    INTEGER NOT NULL,
    PRIMARY KEY (key, version)
) STRICT;

CREATE INDEX IF NOT EXISTS configurations_secret ON configurations (key) WHERE is_secret = 1;

-- The key the file's secrets are encrypted under (its id, never the key).
CREATE TABLE IF NOT EXISTS configuration_keyring (
    slot        INTEGER PRIMARY KEY CHECK (slot = 1),
    key_id      TEXT NOT NULL,
    since_at    INTEGER NOT NULL,
    position    INTEGER NOT NULL
) STRICT;
