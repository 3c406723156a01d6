#!/bin/sh
# Mounted into /docker-entrypoint-initdb.d/ by docker-compose.yml: the postgres image runs it
# once, when the pgdata volume is empty. POSTGRES_DB (MLflow's database) is created by the
# image itself; this adds the Optuna study database (OPTUNA_DB), owned by the same user.
# A later change of OPTUNA_DB needs `CREATE DATABASE` by hand (or `docker compose down -v`).
# No `set -u`: without its executable bit the entrypoint sources this file instead of running it.
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v db="${OPTUNA_DB:-optuna}" -v owner="$POSTGRES_USER" <<'SQL'
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'owner')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db')\gexec
SQL
