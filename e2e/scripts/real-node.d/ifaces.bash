# Host interface discovery (issue 14): the README's host-ifaces example, XDP on the node
# interfaces a pattern matches, with a veth created and deleted in the node's network namespace
# during the test (the agent hears it through its rtnetlink listener; nothing polls), and tc on
# each node's primary interface. Sourced by
# e2e/scripts/real-node-test (see README.md here).
echo "== host interface patterns: a veth made on a node gets its links, a deleted one loses them"
# The README's example ("Host interface discovery"), its pattern narrowed to this test's veths,
# on this test's nodes: XDP on /^bpfpinif[0-9]+$/, tc egress on each node's primary interface.
sed -n '/^# example: host-ifaces$/,/^# end: host-ifaces$/p' README.md | grep -v '^# ' >"$WORK/ifaces.yaml"
sed -i 's#/^eth\[0-9\]+\$/#/^bpfpinif[0-9]+$/#; s#name: host-ifaces#name: real-ifaces#' "$WORK/ifaces.yaml"
printf '  nodeSelector: {matchLabels: {bpfpin.io/e2e-group: real}}\n' >>"$WORK/ifaces.yaml"
check "the README's host-ifaces example has the narrowed pattern" grep -qF '"/^bpfpinif[0-9]+$/"' "$WORK/ifaces.yaml"
IF_N1=${NODES[0]}
IFL=/sys/fs/bpf/bpfpin/real-ifaces/links
node_ns "$IF_N1" ip link del bpfpinif0 >/dev/null 2>&1 || true
kubectl apply -f "$WORK/ifaces.yaml" >/dev/null
check "kubectl wait --for=condition=Ready bpfobject/real-ifaces (the pattern matches nothing yet: no error)" \
    kubectl wait --for=condition=Ready bpfobject/real-ifaces --timeout=60s
no_xdp_links() { # node
    node_ns "$1" test -e /sys/fs/bpf/bpfpin/real-ifaces/progs/xdp_count || return 1
    [[ -z "$(node_ns "$1" find "$IFL/xdp_count" -mindepth 1 2>/dev/null)" ]]
}
# The program of the link pinned at PATH runs as the interface's XDP program (ip -d link says
# which program id it has; bpftool here does not name a link's interface).
xdp_on() { # node path iface
    local prog
    prog="$(node_ns "$1" bpftool link show pinned "$2" | awk '{for (i = 1; i < NF; i++) if ($i == "prog") { print $(i + 1); exit }}')"
    node_ns "$1" ip -d link show dev "$3" | tee /dev/stderr | grep -Eq "xdp.*(id |id:)$prog([^0-9]|$)"
}
IFP=/sys/fs/bpf/bpfpin/real-ifaces/maps/packets
declare -A IF_PRIMARY
for n in "${NODES[@]}"; do
    check "$n: real-ifaces pinned, no XDP link (nothing matches)" no_xdp_links "$n"
    primary="$(node_ns "$n" ip -4 route show default | awk '{for (i = 1; i < NF; i++) if ($i == "dev") { print $(i + 1); exit }}')"
    check "$n: tc egress on the primary interface (${primary:-none}, the default route's): tc-egress-$primary pinned" \
        wait_pin "$n" "$IFL/tc_count/tc-egress-$primary" present
    check "$n: ...and it counts the replies leaving ${primary:-none}" \
        grows "$n tc primary" "map_total $n $IFP 1" "ping -c 3 -i 0.2 -W 1 $(node_ip "$n")"
    IF_PRIMARY[$n]=$primary
done
t=$(now_ms)
node_ns "$IF_N1" sh -c 'ip link add bpfpinif0 type veth peer name bpfpinpeer0 && ip link set bpfpinpeer0 up && ip link set bpfpinif0 up'
check "$IF_N1: ip link add bpfpinif0 -> links/xdp_count/xdp-bpfpinif0 pinned" \
    wait_pin "$IF_N1" "$IFL/xdp_count/xdp-bpfpinif0" present
timing "ip link add -> XDP link pinned (rtnetlink event, no polling)" "$t"
check "$IF_N1: bpfpinif0 runs the link's program as its XDP (ip -d link)" xdp_on "$IF_N1" "$IFL/xdp_count/xdp-bpfpinif0" bpfpinif0
check "$IF_N1: the peer bpfpinpeer0 (not matching) has no link" \
    bash -c "! nsenter -t $(kubelet_pid "$IF_N1") -m -- ls $IFL/xdp_count | grep -q bpfpinpeer0"
for n in "${NODES[@]:1}"; do
    check "$n: no bpfpinif0 there, no XDP link" no_xdp_links "$n"
done
status_lists_link() { # node object link-suffix
    local i
    for ((i = 0; i < 100; i++)); do
        kubectl get bpfnodestate "$1" -o json | jq -e --arg o "$2" --arg l "$3" \
            '.status.objects[] | select(.name == $o) | .links | any(endswith($l))' >/dev/null && return 0
        sleep 0.1
    done
    kubectl get bpfnodestate "$1" -o json | jq --arg o "$2" '.status.objects[] | select(.name == $o) | .links'
    return 1
}
check "$IF_N1: BpfNodeState lists real-ifaces' link xdp_count/xdp-bpfpinif0" \
    status_lists_link "$IF_N1" real-ifaces /xdp_count/xdp-bpfpinif0
t=$(now_ms)
node_ns "$IF_N1" ip link del bpfpinif0
check "$IF_N1: ip link del bpfpinif0 -> its XDP link pin gone" \
    wait_pin "$IF_N1" "$IFL/xdp_count/xdp-bpfpinif0" absent
timing "ip link del -> XDP link pin gone" "$t"
check "$IF_N1: the primary interface's tc link stays, counting" \
    grows "$IF_N1 tc primary" "map_total $IF_N1 $IFP 1" "ping -c 3 -i 0.2 -W 1 $(node_ip "$IF_N1")"
check "$IF_N1: real-ifaces still Ready" kubectl wait --for=condition=Ready bpfobject/real-ifaces --timeout=30s
agent_log_has() { # node text
    kubectl -n "$NS" logs "$(agent_pod "$1")" -c agent | grep -F "$2"
}
check "$IF_N1: the agent listens to the kernel's link events (its log)" \
    agent_log_has "$IF_N1" "listening to the kernel's link events"
check "kubectl delete bpfobject/real-ifaces returns (finalizer done)" kubectl delete bpfobject real-ifaces --timeout=60s
stopped_listening() { # node
    local i
    for ((i = 0; i < 100; i++)); do
        agent_log_has "$1" "stopped listening to link events" && return 0
        sleep 0.1
    done
    return 1
}
check "$IF_N1: with no object following host interfaces, the agent stops listening" stopped_listening "$IF_N1"
for n in "${NODES[@]}"; do
    check "$n: real-ifaces unpinned" unpinned "$n" real-ifaces
done
