"""Bootstrap shared by every kequn service: config, db, server, auth, metrics, errors, logs."""
