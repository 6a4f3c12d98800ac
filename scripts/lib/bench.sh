# Shared by the benchmark scripts.

# start_bench_node BINARY PORT LOG [VAR=value...]: starts a switchboard node
# on PORT in the background, without per-client or per-address limits (the
# load generator drives every connection from one address, and the peers it
# is compared with have none), and appends its pid to `pids`.
start_bench_node() {
  local bin=$1 port=$2 log=$3
  shift 3
  env PORT="$port" HOST=127.0.0.1 NODE_ID="bench-$port" RUST_LOG=warn \
    RATE_LIMIT_PER_SEC=0 CONNECT_RATE_PER_IP=0 HTTP_CONNECTIONS_PER_IP=0 \
    "$@" "$bin" serve >>"$log" 2>&1 &
  pids+=($!)
}
