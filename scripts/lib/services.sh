# Starts the local services switchboard's tests and scripts/cluster use,
# each only when it is not already running. Sourced by scripts/test and
# scripts/cluster; expects the packages to be installed (scripts/test does).

# Redis on 127.0.0.1:6379.
ensure_redis() {
  if redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    echo "redis: running"
    return
  fi
  echo "redis: starting"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /tmp --logfile /tmp/switchboard-redis.log
  for _ in $(seq 1 50); do
    redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && return
    sleep 0.1
  done
  echo "redis did not start" >&2
  return 1
}

# PostgreSQL on 127.0.0.1:5432, user postgres without a password, database `test`.
pg_query() { psql -h 127.0.0.1 -U postgres -d "${1:-postgres}" -tAc "${2:-select 1}" 2>/dev/null; }

ensure_postgres() {
  if pg_query test >/dev/null; then
    echo "postgresql: running"
    return
  fi
  echo "postgresql: starting"
  local cluster
  cluster=$(ls /etc/postgresql | sort -V | tail -1)
  pg_ctlcluster --skip-systemctl-redirect "$cluster" main start 2>/dev/null || true
  for _ in $(seq 1 50); do pg_isready -h 127.0.0.1 -q && break; sleep 0.2; done
  if ! pg_query postgres >/dev/null; then
    # A fresh install asks for passwords on TCP: trust local connections.
    sed -i '1i host all all 127.0.0.1/32 trust' "/etc/postgresql/$cluster/main/pg_hba.conf"
    pg_ctlcluster --skip-systemctl-redirect "$cluster" main reload
    sleep 1
  fi
  ensure_database test
  pg_query test >/dev/null || { echo "postgresql is not reachable as postgres@127.0.0.1/test" >&2; return 1; }
}

# Creates database $1 when missing.
ensure_database() {
  pg_query postgres "select 1 from pg_database where datname = '$1'" | grep -q 1 \
    || psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE \"$1\""
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# tansu, a Kafka-wire-compatible broker, on 127.0.0.1:9092.
ensure_tansu() {
  export PATH="$HOME/.cargo/bin:$PATH"
  if ! command -v tansu >/dev/null; then
    echo "tansu: installing (the first build takes 10-15 minutes)"
    cargo install tansu --locked --features dynostore,libsql
  fi
  if port_open 9092; then
    echo "tansu: running"
    return
  fi
  echo "tansu: starting"
  # SQLite storage, new each start: tansu 0.6's memory engine answers a
  # fetch from an offset inside a record batch with the next batch, so a
  # consumer resuming from a committed offset there skips the batch's
  # remaining records (measured; the SQLite engine returns the batch).
  # (The path in a sqlite:// URL is relative to the working directory.)
  rm -f /tmp/switchboard-tansu.db /tmp/switchboard-tansu.db-*
  (cd /tmp && nohup tansu broker --listener-url tcp://127.0.0.1:9092 \
    --advertised-listener-url tcp://127.0.0.1:9092 --storage-engine sqlite://switchboard-tansu.db \
    >/tmp/switchboard-tansu.log 2>&1 &)
  for _ in $(seq 1 50); do port_open 9092 && return; sleep 0.2; done
  echo "tansu did not start" >&2
  return 1
}
