# pods on the cgroup hooks (issue 14): the README's pod-egress example (cgroupSkb egress on every
# matching pod's cgroup), with pods created and deleted during the test. Sourced by
# e2e/scripts/real-node-test (see README.md here); its chart values are in podattach.yaml.
echo "== pods on the cgroup hooks: cgroupSkb on matching pods' cgroups, created and deleted during the test"
CNS=podcg-e2e
kubectl create namespace "$CNS" >/dev/null
sed -n '/^# example: pod-egress$/,/^# end: pod-egress$/p' README.md | grep -v '^# ' >"$WORK/pod-egress.yaml"
sed -i "s#namespace: web#namespace: $CNS#; s#app: web#app: cg-target#" "$WORK/pod-egress.yaml"
printf '  nodeSelector: {matchLabels: {bpfpin.io/e2e-group: real}}\n' >>"$WORK/pod-egress.yaml"
check "the README's pod-egress example applies" kubectl apply -f "$WORK/pod-egress.yaml"
check "kubectl wait --for=condition=Ready bpfobject/pod-egress (no pod yet)" \
    kubectl wait --for=condition=Ready bpfobject/pod-egress --timeout=60s
cg_pod_yaml() { # name node app
    printf 'apiVersion: v1\nkind: Pod\nmetadata: {name: %s, namespace: %s, labels: {app: %s}}\nspec:\n  nodeName: %s\n  terminationGracePeriodSeconds: 0\n  containers:\n  - {name: pause, image: localhost/bpfpin-pause:dev, imagePullPolicy: Never}\n' \
        "$1" "$CNS" "$3" "$2"
}
cg_uid() { kubectl -n "$CNS" get pod "$1" -o 'jsonpath={.metadata.uid}'; }
PE=/sys/fs/bpf/bpfpin/pod-egress
cg_link() { echo "$PE/links/count_egress/cgroupskb-egress-pod-$(cg_uid "$1")"; }
# The pod's cgroup as the kubelet made it, in the unified hierarchy (any QoS class).
cg_dir() { find /sys/fs/cgroup/unified -maxdepth 4 -type d -name "pod$(cg_uid "$1")" | head -n 1; }
# Three pings from a process of the pod's cgroup (moved into it from the node, as a container
# process would be).
ping_in_pod() { # node pod
    local dir
    dir="$(cg_dir "$2")"
    [[ -n "$dir" ]] || { echo "no cgroup for $2"; return 1; }
    node_ns "$1" sh -c "echo \$\$ > $dir/cgroup.procs && exec ping -4 -q -c 3 -i 0.2 -W 1 127.0.0.1"
}
stays() { # desc cmd-to-read cmd-to-drive
    local before after
    before="$(eval "$2")"
    eval "$3" >/dev/null 2>&1 || true
    sleep 0.5
    after="$(eval "$2")"
    echo "$before -> $after"
    [[ "$before" == "$after" ]]
}
n1=${NODES[0]}
t=$(now_ms)
t_pod=$t
cg_pod_yaml cg-1 "$n1" cg-target | kubectl apply -f - >/dev/null
check "$n1: cg-1's link pinned at links/count_egress/cgroupskb-egress-pod-<uid>" \
    wait_pin "$n1" "$(cg_link cg-1)" present
timing "pod apply -> cgroup_skb link pinned on the pod's cgroup" "$t"
check "cg-1 becomes Ready" kubectl -n "$CNS" wait --for=condition=Ready pod/cg-1 --timeout=60s
attached_at="$(kubectl -n "$NS" logs --timestamps "$(agent_pod "$n1")" -c agent | grep 'attached to pod cgroup' | grep "$CNS/cg-1" | head -n 1 | cut -d' ' -f1)"
check "$n1: the agent logs the attachment with since_pod_created_ms" test -n "$attached_at"
if [[ -n "$attached_at" ]]; then
    printf 'real-node: pod apply -> cgroup_skb attached to the pod cgroup (agent log time) %s ms\n' "$(($(date -d "$attached_at" +%s%3N) - t_pod))"
fi
check "$n1: cgroup_skb counts the egress of a process in cg-1's cgroup" \
    grows "pod egress" "map_total $n1 $PE/maps/bytes_out 0" "ping_in_pod $n1 cg-1"
cg_pod_yaml cg-other "$n1" other | kubectl apply -f - >/dev/null
check "cg-other (not matching) becomes Ready" kubectl -n "$CNS" wait --for=condition=Ready pod/cg-other --timeout=60s
no_cg_link_for_other() {
    node_ns "$n1" ls "$PE/links/count_egress"
    ! node_ns "$n1" ls "$PE/links/count_egress" | grep -q "$(cg_uid cg-other)"
}
check "$n1: cg-other (app=other) gets no link" no_cg_link_for_other
check "$n1: a process in cg-other's cgroup is not counted" \
    stays "other egress" "map_total $n1 $PE/maps/bytes_out 0" "ping_in_pod $n1 cg-other"
check "$n1: BpfNodeState pod-egress pods: matched 1, attached 1, no failures" \
    pods_status_is "$n1" pod-egress '.matched == 1 and .attached == 1 and ((.failures // []) | length == 0)'
cglink="$(cg_link cg-1)"
t=$(now_ms)
kubectl -n "$CNS" delete pod cg-1 --wait=true --timeout=60s >/dev/null
check "$n1: cg-1 deleted: its cgroup link goes" wait_pin "$n1" "$cglink" absent
timing "pod delete returned -> its cgroup link gone" "$t"
check "$n1: BpfNodeState pod-egress pods: matched 0, attached 0" pods_status_is "$n1" pod-egress '.matched == 0 and .attached == 0'
check "kubectl delete bpfobject/pod-egress returns (finalizer done)" kubectl delete bpfobject pod-egress --timeout=60s
for n in "${NODES[@]}"; do
    check "$n: pod-egress and its pod links unpinned" unpinned "$n" pod-egress
done
kubectl delete namespace "$CNS" --wait=false >/dev/null
