# Sourced by the device scripts (device_check.sh, device_train.sh), which set $out:
# step NAME SECONDS COMMAND...: run COMMAND under a time limit with its output in $out/NAME.log; append its
# exit code and wall time to $out/steps.txt and show them with the log's last lines.
step() {
  local name=$1 limit=$2 start rc
  shift 2
  start=$(date +%s%N)
  timeout "$limit" "$@" >"$out/$name.log" 2>&1
  rc=$?
  printf '%-14s rc=%-3s %7.1f s\n' "$name" "$rc" "$((($(date +%s%N) - start) / 1000000))e-3" | tee -a "$out/steps.txt"
  tail -n 4 "$out/$name.log"
}
