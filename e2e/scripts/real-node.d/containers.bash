# uprobes in containers (issue 14): the README's container-uprobe example, retargeted at the
# e2e image's own binary (/pause of localhost/bpfpin-pause:dev, whose `tick` mode calls
# bpfpin_tick every 50 ms), with pods created, a container restarted and pods deleted during the
# test. Sourced by e2e/scripts/real-node-test (see README.md here); its chart values are in
# containers.yaml (and podattach.yaml's podCgroups).
echo "== uprobes in containers: a uprobe on the function of a container's own binary, pods created, restarted and deleted during the test"
UNS=ctr-e2e
kubectl create namespace "$UNS" >/dev/null
clang -O2 -g -target bpf -I"/usr/include/$(gcc -dumpmachine)" -c examples/uprobe/uprobe.bpf.c -o "$WORK/bytecode/uprobe.bpf.o"
for n in "${NODES[@]}"; do
    node_ns "$n" sh -c "mkdir -p /var/lib/bpfpin/bytecode && cp $WORK/bytecode/uprobe.bpf.o /var/lib/bpfpin/bytecode/"
done
sed -n '/^# example: container-uprobe$/,/^# end: container-uprobe$/p' README.md | grep -v '^# ' >"$WORK/container-uprobe.yaml"
sed -i "s#namespace: web#namespace: $UNS#; s#app: web#app: ticker#; s#target: /bin/bash#target: /pause#; s#symbol: readline#symbol: bpfpin_tick#; s#containerNames: \[shell\]#containerNames: [ticker]#" \
    "$WORK/container-uprobe.yaml"
printf '  nodeSelector: {matchLabels: {bpfpin.io/e2e-group: real}}\n' >>"$WORK/container-uprobe.yaml"
check "the README's container-uprobe example applies (target /pause, symbol bpfpin_tick, container ticker)" \
    kubectl apply -f "$WORK/container-uprobe.yaml"
check "kubectl wait --for=condition=Ready bpfobject/container-uprobe (no pod yet)" \
    kubectl wait --for=condition=Ready bpfobject/container-uprobe --timeout=60s
# CEL: a uprobe in containers cannot also name a pid.
sed 's#symbol: bpfpin_tick#symbol: bpfpin_tick\n        pid: 1#; s#name: container-uprobe#name: container-uprobe-pid#' \
    "$WORK/container-uprobe.yaml" >"$WORK/container-uprobe-pid.yaml"
refused_pid() {
    local out
    if out="$(kubectl apply --dry-run=server -f "$WORK/container-uprobe-pid.yaml" 2>&1)"; then
        echo "accepted: $out"
        return 1
    fi
    echo "$out"
    grep -q 'pid and containers are exclusive' <<<"$out"
}
check "the API server refuses pid with containers (CEL: pid and containers are exclusive)" refused_pid
# A pod with two containers: `ticker` calls bpfpin_tick, `idle` (not selected) only waits.
ctr_pod_yaml() { # name node app
    printf 'apiVersion: v1\nkind: Pod\nmetadata: {name: %s, namespace: %s, labels: {app: %s}}\nspec:\n  nodeName: %s\n  terminationGracePeriodSeconds: 0\n  containers:\n  - {name: ticker, image: localhost/bpfpin-pause:dev, imagePullPolicy: Never, args: [tick]}\n  - {name: idle, image: localhost/bpfpin-pause:dev, imagePullPolicy: Never}\n' \
        "$1" "$UNS" "$3" "$2"
}
ctr_uid() { kubectl -n "$UNS" get pod "$1" -o 'jsonpath={.metadata.uid}'; }
ctr_id() { kubectl -n "$UNS" get pod "$1" -o 'jsonpath={.status.containerStatuses[?(@.name=="'"$2"'")].containerID}'; }
CU=/sys/fs/bpf/bpfpin/container-uprobe
ctr_link() { echo "$CU/links/count_readline/uprobe-pod-$(ctr_uid "$1")-$2"; } # pod container
ticks() { map_total "$n1" "$CU/maps/calls" 0; }
n1=${NODES[0]}
t=$(now_ms)
t_pod=$t
ctr_pod_yaml up-1 "$n1" ticker | kubectl apply -f - >/dev/null
check "$n1: up-1's link pinned at links/count_readline/uprobe-pod-<uid>-ticker" \
    wait_pin "$n1" "$(ctr_link up-1 ticker)" present
timing "pod apply -> uprobe link pinned on the container's /pause" "$t"
attached_at="$(kubectl -n "$NS" logs --timestamps "$(agent_pod "$n1")" -c agent | grep 'attached uprobe in container' | grep "$UNS/up-1" | head -n 1 | cut -d' ' -f1)"
check "$n1: the agent logs the attachment with since_pod_created_ms" test -n "$attached_at"
if [[ -n "$attached_at" ]]; then
    printf 'real-node: pod apply -> uprobe attached in the container (agent log time) %s ms\n' "$(($(date -d "$attached_at" +%s%3N) - t_pod))"
fi
check "$n1: the uprobe counts the ticks of up-1's ticker container" grows "container ticks" ticks "sleep 0.2"
no_idle_link() {
    node_ns "$n1" ls "$CU/links/count_readline"
    ! node_ns "$n1" test -e "$(ctr_link up-1 idle)"
}
check "$n1: up-1's idle container (not in containerNames) gets no link" no_idle_link
check "$n1: BpfNodeState container-uprobe pods: matched 1, attached 1, no failures" \
    pods_status_is "$n1" container-uprobe '.matched == 1 and .attached == 1 and ((.failures // []) | length == 0)'
# The node has no /pause: the file probed is the container's.
check "$n1: the node itself has no /pause (the target is resolved inside the container)" \
    node_ns "$n1" sh -c '! test -e /pause'
# The ticker container is stopped (its process killed from the node): the kubelet starts it again
# with a new container ID, and the agent attaches again.
old_id="$(ctr_id up-1 ticker)"
old_link="$(node_ns "$n1" bpftool -j link show pinned "$(ctr_link up-1 ticker)" | jq -r .id)"
restart_ticker() {
    local dir pid i
    dir="$(find /sys/fs/cgroup/unified -maxdepth 6 -type d -name "*${old_id#*://}*" | head -n 1)"
    pid="$(head -n 1 "$dir/cgroup.procs")"
    [[ -n "$pid" ]] || { echo "no process in $dir"; return 1; }
    kill "$pid"
    for ((i = 0; i < 300; i++)); do
        local now
        now="$(ctr_id up-1 ticker)"
        if [[ -n "$now" && "$now" != "$old_id" ]] && kubectl -n "$UNS" get pod up-1 -o json | jq -e '.status.containerStatuses[] | select(.name == "ticker") | .state.running' >/dev/null; then
            echo "$old_id -> $now"
            return 0
        fi
        sleep 0.1
    done
    echo "ticker not restarted: $(ctr_id up-1 ticker)"
    return 1
}
check "$n1: up-1's ticker restarted (a new container ID)" restart_ticker
relinked() {
    local i id
    for ((i = 0; i < 150; i++)); do
        id="$(node_ns "$n1" bpftool -j link show pinned "$(ctr_link up-1 ticker)" 2>/dev/null | jq -r .id)"
        if [[ -n "$id" && "$id" != null && "$id" != "$old_link" ]]; then
            echo "link $old_link -> $id"
            return 0
        fi
        sleep 0.2
    done
    echo "link still ${id:-none}"
    return 1
}
check "$n1: the restarted container is attached again (a new link)" relinked
check "$n1: the uprobe counts the restarted container's ticks" grows "container ticks" ticks "sleep 0.2"
ctrlink="$(ctr_link up-1 ticker)"
t=$(now_ms)
kubectl -n "$UNS" delete pod up-1 --wait=true --timeout=60s >/dev/null
check "$n1: up-1 deleted: its uprobe link goes" wait_pin "$n1" "$ctrlink" absent
timing "pod delete returned -> its uprobe link gone" "$t"
check "$n1: BpfNodeState container-uprobe pods: matched 0, attached 0" \
    pods_status_is "$n1" container-uprobe '.matched == 0 and .attached == 0'
check "kubectl delete bpfobject/container-uprobe returns (finalizer done)" kubectl delete bpfobject container-uprobe --timeout=60s
for n in "${NODES[@]}"; do
    check "$n: container-uprobe and its container links unpinned" unpinned "$n" container-uprobe
done
kubectl delete namespace "$UNS" --wait=false >/dev/null
