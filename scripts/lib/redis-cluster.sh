# A local Redis Cluster for the sharded bus (#15): three masters and three
# replicas as `redis-server --cluster-enabled yes` processes on consecutive
# ports from $REDIS_CLUSTER_PORT (7100), created with
# `redis-cli --cluster create`. Sourced; each function is idempotent.
#
#   ensure_redis_cluster   starts it (or finds it running); prints its seed
#                          addresses in REDIS_CLUSTER_NODES
#   stop_redis_cluster     stops every process and forgets the cluster
#   redis_cluster_pid N    the pid of node N (0-5), for kill -9 tests

redis_cluster_base=${REDIS_CLUSTER_PORT:-7100}
redis_cluster_dir=${REDIS_CLUSTER_DIR:-/tmp/switchboard-redis-cluster}

redis_cluster_ports() { seq "$redis_cluster_base" $((redis_cluster_base + 5)); }

ensure_redis_cluster() {
  local port seeds=()
  for port in $(redis_cluster_ports); do seeds+=("127.0.0.1:$port"); done
  REDIS_CLUSTER_NODES=$(IFS=,; echo "${seeds[*]}")
  export REDIS_CLUSTER_NODES
  if redis-cli -p "$redis_cluster_base" cluster info 2>/dev/null | grep -q '^cluster_state:ok'; then
    echo "redis cluster: running on ${seeds[0]}..."
    return
  fi
  echo "redis cluster: starting on ports $redis_cluster_base-$((redis_cluster_base + 5))"
  mkdir -p "$redis_cluster_dir"
  for port in $(redis_cluster_ports); do
    redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
    rm -f "$redis_cluster_dir/nodes-$port.conf"
    redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --cluster-enabled yes \
      --cluster-config-file "$redis_cluster_dir/nodes-$port.conf" --cluster-node-timeout 2000 \
      --save "" --appendonly no --dir "$redis_cluster_dir" --logfile "$redis_cluster_dir/$port.log" \
      --pidfile "$redis_cluster_dir/$port.pid"
  done
  for port in $(redis_cluster_ports); do
    for _ in $(seq 1 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  done
  redis-cli --cluster create "${seeds[@]}" --cluster-replicas 1 --cluster-yes >"$redis_cluster_dir/create.log" 2>&1 || {
    echo "redis-cli --cluster create failed:" >&2
    tail -20 "$redis_cluster_dir/create.log" >&2
    return 1
  }
  for _ in $(seq 1 100); do
    redis-cli -p "$redis_cluster_base" cluster info | grep -q '^cluster_state:ok' && return
    sleep 0.1
  done
  echo "redis cluster did not reach cluster_state:ok" >&2
  return 1
}

redis_cluster_pid() { cat "$redis_cluster_dir/$((redis_cluster_base + $1)).pid"; }

stop_redis_cluster() {
  local port
  for port in $(redis_cluster_ports); do
    redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
  done
  rm -rf "$redis_cluster_dir"
}
