"""Where studies live: storage URLs to Optuna storages (SQLite, PostgreSQL, the gRPC proxy),
the one module that touches Optuna's private names (:mod:`~vae_search.storage._optuna`),
studies and their configuration check, heartbeats, artifacts, the proxy server and the report
writer thread."""
