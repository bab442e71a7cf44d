# shellcheck shell=bash disable=SC2153 # PORT, STATE, PKI, RUN, LOGS, SERVICE_IP: e2e/scripts/cluster's
# Real nodes of e2e/scripts/cluster (sourced by it): containerd + a kubelet built by e2e/scripts/build-k8s,
# registering a Node with the local API server, each node in its own mount and network namespace
# so that nothing of it lands on the test machine:
#
#   mount namespace   its own / (made rshared inside, for Bidirectional propagation), an empty
#                     /sys/fs/bpf (the chart's mount-bpffs mounts a bpffs instance of the node's
#                     own there), tracefs at /sys/kernel/tracing, a tmpfs on /run (containerd's
#                     shim sockets, runc, iptables' lock), /var as an overlay whose upper layer is
#                     in the node dir (the kubelet's device-plugins socket, /var/log/pods, libcni
#                     state), files bound over the three sysctls the kubelet sets host-wide.
#   network namespace eth0, a veth to the machine (10.N.0.4i+2/30, the machine side .4i+1), the
#                     pod bridge cni0 (10.N.i.0/24), and the NAT rules kube-proxy would make for
#                     the `kubernetes` Service: 10.96.0.1:443 -> the API server on the machine's
#                     side of the veth. hostNetwork pods (the agent) see the node's eth0.
#   cgroups           /<e2e-PORT-NAME> in every v1 hierarchy (and cgroup2): the kubelet's
#                     cgroupRoot, plus <root>/node for containerd, its shims and the kubelet.
#   files             <state>/nodes/NAME/: containerd root/state/socket, kubelet root dir,
#                     certificates, configs, CNI config and IPAM state, logs.
#
# `node remove` and `down` stop the kubelet, kill every process of the node's cgroups, let the
# namespaces go (which unmounts the node's bpffs and deletes its veth) and remove the cgroups and
# the node dir.
#
# The kubelet is reached by the API server (logs, exec) at the node's IP without authentication
# (anonymous + AlwaysAllow): the API server here has no kubelet client certificate.

real_images_dir() {
    printf '%s\n' "${BPFPIN_IMAGES_DIR:-${CARGO_TARGET_DIR:-$(cd "$SCRIPTS_DIR/../.." && pwd)/target}/images}"
}

# 150..249: keeps clear of 10.96.0.0/16 (the Service range) for every port.
real_net_octet() { printf '%s\n' $((150 + PORT % 100)); }
real_cgroup_root() { printf 'e2e-%s-%s\n' "$PORT" "$1"; }
real_is() { [[ -f "$STATE/nodes/$1/real" ]]; }

# Run in node DIR's namespaces (mount + network), as its anchor holds them.
real_ns() { # dir cmd...
    local dir="$1" pid
    shift
    pid="$(pid_alive "$dir/anchor.pid")" || die "node namespace of $(basename "$dir") is gone"
    nsenter -t "$pid" -m -n -- "$@"
}

real_hierarchies() {
    local h
    for h in /sys/fs/cgroup/*/; do
        [[ -f "$h/cgroup.procs" ]] && printf '%s\n' "${h%/}"
    done
}

real_cgroups_make() { # root
    local h
    while read -r h; do
        mkdir -p "$h/$1/node"
        if [[ -f "$h/cpuset.cpus" ]]; then
            # A v1 cpuset takes no process before its cpus and mems are set.
            cat "$h/cpuset.cpus" >"$h/$1/cpuset.cpus"
            cat "$h/cpuset.mems" >"$h/$1/cpuset.mems"
            cat "$h/cpuset.cpus" >"$h/$1/node/cpuset.cpus"
            cat "$h/cpuset.mems" >"$h/$1/node/cpuset.mems"
        fi
    done < <(real_hierarchies)
}

real_cgroups_join() { # root pid
    local h
    while read -r h; do
        printf '%s\n' "$2" >"$h/$1/node/cgroup.procs" 2>/dev/null || true
    done < <(real_hierarchies)
}

real_cgroup_pids() { # root: every process in the node's cgroups
    [[ -d /sys/fs/cgroup/pids/$1 ]] || return 0
    find "/sys/fs/cgroup/pids/$1" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -un || true
}

real_cgroups_remove() { # root
    local h i
    while read -r h; do
        [[ -d "$h/$1" ]] || continue
        for ((i = 0; i < 50; i++)); do
            find "$h/$1" -depth -type d -exec rmdir {} + 2>/dev/null || true
            [[ -d "$h/$1" ]] || break
            sleep 0.1
        done
        [[ -d "$h/$1" ]] && log "warning: could not remove cgroup $h/$1"
    done < <(real_hierarchies)
    return 0
}

real_write_configs() { # dir name index
    local dir="$1" name="$2" i="$3" n root sock
    n="$(real_net_octet)"
    root="$(real_cgroup_root "$name")"
    sock="$dir/containerd/containerd.sock"
    mkdir -p "$dir"/{containerd/{root,state,opt,runc},cni/{net.d,ipam},kubelet,manifests,var/{upper,work},sysctl,logs}
    # The kubelet writes these host-wide; inside the node they land on these files.
    printf '1\n' >"$dir/sysctl/vm.overcommit_memory"
    printf '10\n' >"$dir/sysctl/kernel.panic"
    printf '1\n' >"$dir/sysctl/kernel.panic_on_oops"
    cat >"$dir/containerd.toml" <<EOF
version = 2
root = "$dir/containerd/root"
state = "$dir/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$sock"
[ttrpc]
  address = "$sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/bpfpin-pause:dev"
  # Pod network namespaces under /var/run/netns (the node's own tmpfs /run), where the
  # chart's agent.podNetworkNamespaces.hostPath finds them on every node.
  netns_mounts_under_state_dir = false
  disable_apparmor = true
  # The machine's capability bounding set may lack CAP_SYS_RESOURCE: runc cannot lower
  # oom_score_adj then, and every sandbox fails unless it keeps the parent's.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "$(command -v runc)"
        Root = "$dir/containerd/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$dir/cni/net.d"
    max_conf_num = 1
EOF
    cat >"$dir/cni/net.d/10-bpfpin-e2e.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "bpfpin-e2e",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$dir/cni/ipam",
        "ranges": [[{"subnet": "10.$n.$i.0/24", "gateway": "10.$n.$i.1"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    }
  ]
}
EOF
    cat >"$dir/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://$sock
imageServiceEndpoint: unix://$sock
cgroupDriver: cgroupfs
cgroupRoot: /$root
cgroupsPerQOS: true
enforceNodeAllocatable: ["pods"]
failSwapOn: false
failCgroupV1: false
makeIPTablesUtilChains: false
staticPodPath: $dir/manifests
fileCheckFrequency: 5s
syncFrequency: 10s
nodeStatusReportFrequency: 10s
volumePluginDir: $dir/kubelet/volume-plugins
address: 0.0.0.0
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization:
  mode: AlwaysAllow
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1%"
  imagefs.available: "1%"
  nodefs.inodesFree: "1%"
EOF
    # Node credentials: the Node authorizer and NodeRestriction admit system:node:NAME only.
    if [[ ! -f "$PKI/node-$name.crt" ]]; then
        issue_cert "node-$name" "/O=system:nodes/CN=system:node:$name" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
    fi
    # The kubelet reaches the API server through the node's `kubernetes` Service NAT rule, so its
    # certificate's 10.96.0.1 name matches.
    printf '    client-certificate-data: %s\n    client-key-data: %s\n' \
        "$(b64 "$PKI/node-$name.crt")" "$(b64 "$PKI/node-$name.key")" |
        write_kubeconfig "$dir/kubeconfig" "system:node:$name"
    sed -i "s#server: https://127.0.0.1:$PORT#server: https://$SERVICE_IP:443#" "$dir/kubeconfig"
}

# The process that holds the node's namespaces: it makes its mount namespace what the kubelet
# needs, then waits (killed by `node remove`/`down`).
# shellcheck disable=SC2016
REAL_ANCHOR='
set -eu
dir=$1
mount --make-rshared /
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t overlay overlay -o "lowerdir=/var,upperdir=$dir/var/upper,workdir=$dir/var/work" /var
mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing
for s in vm.overcommit_memory kernel.panic kernel.panic_on_oops; do
    mount --bind "$dir/sysctl/$s" "/proc/sys/$(printf %s "$s" | tr . /)"
done
ip link set lo up
touch "$dir/anchor.ready"
exec sleep infinity
'

real_node_add() { # name labels
    local name="$1" labels="$2"
    if ! command -v containerd >/dev/null 2>&1 || ! command -v runc >/dev/null 2>&1 || [[ ! -x /usr/lib/cni/bridge ]]; then
        die "containerd, runc and /usr/lib/cni/bridge are needed for a real node (hack/deps --e2e installs them)"
    fi
    command -v ctr >/dev/null 2>&1 || die "ctr (Debian package containerd) not found"
    command -v iptables >/dev/null 2>&1 || die "iptables not found (apt-get install iptables)"
    local bin
    bin="$("$SCRIPTS_DIR/build-k8s" --print-bindir)"
    [[ -x "$bin/kubelet" && -x "$bin/kube-scheduler" ]] || "$SCRIPTS_DIR/build-k8s" >&2 || die "e2e/scripts/build-k8s failed"
    local images
    images="$(real_images_dir)"
    [[ -f "$images/bpfpin-pause-dev.oci.tar" ]] ||
        die "no sandbox image $images/bpfpin-pause-dev.oci.tar: run hack/images first"

    local dir="$STATE/nodes/$name"
    if [[ -d "$dir" ]] && ! real_is "$name"; then
        die "node $name exists and is a simulated node (e2e/scripts/cluster node remove $name first)"
    fi
    if real_is "$name" && pid_alive "$dir/kubelet.pid" >/dev/null; then
        log "real node $name already running"
        printf '%s\n' "$dir"
        return 0
    fi
    [[ -d "$dir" ]] && real_node_stop "$name"
    real_scheduler_start "$bin"

    # Node index i: its veth /30 and pod /24.
    local i used f
    used=" $(cat "$STATE"/nodes/*/index 2>/dev/null | tr '\n' ' ' || true)"
    for ((i = 1; i <= 60; i++)); do [[ "$used" == *" $i "* ]] || break; done
    ((i <= 60)) || die "too many real nodes"
    local n host_ip node_ip root hostif
    n="$(real_net_octet)"
    host_ip="10.$n.0.$((4 * i + 1))"
    node_ip="10.$n.0.$((4 * i + 2))"
    root="$(real_cgroup_root "$name")"
    hostif="e2e${PORT}n$i"
    local t0=$SECONDS t0n
    t0n="$(date +%s%N)"
    mkdir -p "$dir"
    printf '%s\n' "$i" >"$dir/index"
    touch "$dir/real"
    real_write_configs "$dir" "$name" "$i"
    real_cgroups_make "$root"

    rm -f "$dir/anchor.ready"
    start_bg "namespace of $name" "$dir/logs/anchor.log" "$dir/anchor.pid" \
        unshare --mount --net --propagation private -- bash -c "$REAL_ANCHOR" anchor "$dir"
    local anchor
    anchor="$(pid_alive "$dir/anchor.pid")"
    until [[ -f "$dir/anchor.ready" ]]; do
        pid_alive "$dir/anchor.pid" >/dev/null || { tail_log "namespace of $name" "$dir/logs/anchor.log"; die "the namespace of $name could not be set up"; }
        sleep 0.05
    done
    real_cgroups_join "$root" "$anchor"

    # The veth to the machine and the `kubernetes` Service (no kube-proxy here).
    ip link add "$hostif" type veth peer name eth0 netns "$anchor" ||
        die "could not create veth $hostif"
    ip addr add "$host_ip/30" dev "$hostif"
    ip link set "$hostif" up
    real_ns "$dir" sh -ec "
        ip addr add $node_ip/30 dev eth0
        ip link set eth0 up
        ip route add default via $host_ip
        sysctl -qw net.ipv4.ip_forward=1
        for c in OUTPUT PREROUTING; do
            iptables -w -t nat -A \$c -d $SERVICE_IP/32 -p tcp --dport 443 -j DNAT --to-destination $host_ip:$PORT
        done
        iptables -w -t nat -A POSTROUTING -o eth0 -j MASQUERADE
    " >>"$dir/logs/anchor.log" 2>&1 || { tail_log "namespace of $name" "$dir/logs/anchor.log"; die "could not set up the network of $name"; }

    start_bg "containerd of $name" "$dir/logs/containerd.log" "$dir/containerd.pid" \
        nsenter -t "$anchor" -m -n -- containerd --config "$dir/containerd.toml"
    real_cgroups_join "$root" "$(pid_alive "$dir/containerd.pid")"
    local deadline=$((SECONDS + TIMEOUT))
    wait_for "containerd of $name" "$dir/containerd.pid" "$dir/logs/containerd.log" "$deadline" \
        real_ns "$dir" ctr -a "$dir/containerd/containerd.sock" version
    real_import "$dir"

    local -a nodelabels=(--node-labels="bpfpin.io/e2e-real-node=true${labels:+,$labels}")
    start_bg "kubelet of $name" "$dir/logs/kubelet.log" "$dir/kubelet.pid" \
        nsenter -t "$anchor" -m -n -- "$bin/kubelet" --config "$dir/kubelet.yaml" \
        --kubeconfig "$dir/kubeconfig" --root-dir "$dir/kubelet" --cert-dir "$dir/kubelet/pki" \
        --hostname-override "$name" --node-ip "$node_ip" "${nodelabels[@]}" --v=1
    real_cgroups_join "$root" "$(pid_alive "$dir/kubelet.pid")"
    wait_for "kubelet of $name" "$dir/kubelet.pid" "$dir/logs/kubelet.log" "$deadline" \
        real_ns "$dir" curl -fsS --max-time 2 http://127.0.0.1:10248/healthz
    until [[ "$(kc get node "$name" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]; do
        pid_alive "$dir/kubelet.pid" >/dev/null || { tail_log "kubelet of $name" "$dir/logs/kubelet.log"; die "the kubelet of $name exited"; }
        ((SECONDS < deadline)) || { tail_log "kubelet of $name" "$dir/logs/kubelet.log"; die "node $name not Ready after ${TIMEOUT}s"; }
        sleep 0.2
    done
    log "real node $name Ready in $((($(date +%s%N) - t0n) / 1000000)) ms (kubelet pid $(pid_alive "$dir/kubelet.pid"), IP $node_ip)"
    : "$t0"
    printf '%s\n' "$dir"
}

real_import() { # dir: every archive hack/images made
    local dir="$1" f images
    images="$(real_images_dir)"
    for f in "$images"/*.oci.tar; do
        [[ -f "$f" ]] || continue
        real_ns "$dir" ctr -a "$dir/containerd/containerd.sock" -n k8s.io images import "$f" >/dev/null ||
            die "could not import $f into node $(basename "$dir")"
        log "imported $(basename "$f") into $(basename "$dir")"
    done
}

real_import_all() {
    local d found=""
    for d in "$STATE"/nodes/*/; do
        d="${d%/}"
        if ! real_is "$(basename "$d")" || ! pid_alive "$d/containerd.pid" >/dev/null; then continue; fi
        real_import "$d"
        found=1
    done
    [[ -n "$found" ]] || log "no real node is running: nothing imported"
}

real_scheduler_start() { # bindir
    pid_alive "$RUN/kube-scheduler.pid" >/dev/null && return 0
    if [[ ! -f "$PKI/kube-scheduler.crt" ]]; then
        issue_cert kube-scheduler "/CN=system:kube-scheduler" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
    fi
    local kcf="$STATE/kube-scheduler.kubeconfig"
    cert_kubeconfig "$kcf" system:kube-scheduler kube-scheduler
    local port=$((PORT + 10003))
    port_in_use "$port" && die "port $port (kube-scheduler) is already in use; set BPFPIN_E2E_PORT"
    start_bg kube-scheduler "$LOGS/kube-scheduler.log" "$RUN/kube-scheduler.pid" "$1/kube-scheduler" \
        --kubeconfig="$kcf" --authentication-kubeconfig="$kcf" --authorization-kubeconfig="$kcf" \
        --bind-address=127.0.0.1 --secure-port="$port" --leader-elect=false --v=1
}

real_node_stop() { # name: everything of the node but its Node object
    local name="$1" dir="$STATE/nodes/$1" root pid i
    root="$(real_cgroup_root "$name")"
    stop_pidfile "$dir/kubelet.pid" "kubelet of $name"
    # Pods, shims and containerd: everything in the node's cgroups.
    for ((i = 0; i < 50; i++)); do
        local pids
        pids="$(real_cgroup_pids "$root")"
        pid="$(pid_alive "$dir/anchor.pid" || true)"
        [[ -n "$pid" ]] && pids="$(grep -vx "$pid" <<<"$pids" || true)"
        [[ -n "$pids" ]] || break
        # shellcheck disable=SC2086
        kill -KILL $pids 2>/dev/null || true
        sleep 0.1
    done
    rm -f "$dir/containerd.pid"
    stop_pidfile "$dir/anchor.pid" "namespace of $name"
    real_cgroups_remove "$root"
    # The veth goes with the node's network namespace, a moment after its last process.
    local hostif
    hostif="e2e${PORT}n$(cat "$dir/index" 2>/dev/null || echo 0)"
    for ((i = 0; i < 50; i++)); do
        ip link show "$hostif" >/dev/null 2>&1 || break
        sleep 0.1
    done
    ip link del "$hostif" 2>/dev/null || true
}

real_status() { # name dir
    local name="$1" dir="$2" pid ip
    ip="10.$(real_net_octet).0.$((4 * $(cat "$dir/index") + 2))"
    if pid="$(pid_alive "$dir/kubelet.pid")"; then
        printf '  node %-19s real, kubelet running (pid %s; nsenter -t %s -m -n), IP %s\n' "$name" "$pid" "$pid" "$ip"
    else
        printf '  node %-19s real, kubelet not running\n' "$name"
    fi
}
