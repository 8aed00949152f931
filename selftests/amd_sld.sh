#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# amd_sld selftests: KTAP on stdout, one independent case per behaviour the module promises.
# Exit status as kselftest: 0 all passed, 1 a case failed, 4 every case skipped.
#
# Every case loads the module as an operator installs it. The test VM's CPU is QEMU TCG
# taught AMD's hardware (scripts/qemu): Bus Lock Detect, DEBUGCTL, a core PMU counting
# ls_locks.bus_lock. The programs make real split locks, harmless under TCG; outside TCG
# they refuse unless AMD_SLD_ALLOW_REAL_SPLIT_LOCKS=1, and the cases that need them skip.
#
#   AMD_SLD_KO       the module          (default: /amd_sld/amd_sld.ko, the VM's layout)
#   AMD_SLD_MACHINE  which emulated CPU this is (scripts/vmtest --machine): selects the
#                    cases for it; default zen5 (Bus Lock Detect and a PMU)
#   AMD_SLD_ALLOW_REAL_SPLIT_LOCKS=1     let the cases make real split locks on a host
#                                        that is yours alone (a real Zen 5)
#   AMD_SLD_CASES    space-separated subset of cases to run
#   AMD_SLD_EXPECT_CPUS  fail, rather than pass vacuously, unless this many CPUs are online

HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"

# A case that fails half-way must not leave a CPU offline for the next ones.
case_cleanup() {
	for online in /sys/devices/system/cpu/cpu*/online; do
		[ "$(cat "$online")" = 1 ] || echo 1 > "$online"
	done
	# A guest case's VMM left running, and the kvm_amd it loaded (on 5.10 and 6.1 a loaded
	# kvm_amd keeps amd_sld off the trap: the KVM rule).
	[ ! -s /tmp/guestlock.pid ] || { kill "$(cat /tmp/guestlock.pid)" 2> /dev/null; sleep 0.2; }
	rm -f /tmp/guestlock.pid
	if [ -e /tmp/kvm_amd.loaded-by-case ]; then
		modprobe -r kvm_amd 2> /dev/null
		rm -f /tmp/kvm_amd.loaded-by-case
	fi
}

# ---------------------------------------------------------------------------------------

load_unload_arms_and_restores_every_cpu() {
	cpus=$(online_cpus)
	[ -z "$AMD_SLD_EXPECT_CPUS" ] || expect_eq "online CPUs" "$(nproc)" "$AMD_SLD_EXPECT_CPUS"
	load
	expect_eq "armed_cpus" "$(counter armed_cpus)" "$cpus"
	for c in $(seq 0 $(($(nproc) - 1))); do
		[ $(($(debugctl "$c") & 4)) -ne 0 ] || fail "CPU $c: DEBUGCTL bit 2 not set"
	done
	dmesg | grep -q "amd_sld: loaded: split_lock_detect=warn, source=bld+pmu(guest), bus-lock detection armed on CPUs $cpus" ||
		fail "no load line naming CPUs $cpus"
	unload
	dmesg | grep -q "amd_sld: unloaded: .*DEBUGCTL restored on CPUs $cpus\$" ||
		fail "no unload line restoring CPUs $cpus"
	[ ! -e "$SYS" ] || fail "$SYS left behind"
	[ ! -e /sys/module/amd_sld ] || fail "module still present"
}

params_valid_at_load() {
	for case in off=off warn=warn fatal=fatal ratelimit:1=ratelimit:1 ratelimit:10=ratelimit:10 \
		ratelimit:1000=ratelimit:1000 ratelimit:0010=ratelimit:10; do
		value=${case%%=*}
		canonical=${case#*=}
		load "split_lock_detect=$value"
		expect_eq "split_lock_detect after insmod split_lock_detect=$value" "$(cat $PARAM)" "$canonical"
		if [ "$value" = off ]; then
			expect_eq "armed_cpus with off" "$(counter armed_cpus)" ""
		else
			expect_eq "armed_cpus with $value" "$(counter armed_cpus)" "$(online_cpus)"
		fi
		unload
	done
}

INVALID="ratelimit:0 ratelimit:1001 ratelimit: ratelimit:5x ratelimit:-1 ratelimit:+5 WARN Warn OFF warnx off2 ratelimit ratelimit:00000000010 fatal,warn"

params_invalid_at_load() {
	for value in "" $INVALID "$(printf 'war\001n')" "$(printf '\377\376')" "$(head -c 300 /dev/zero | tr '\0' w)"; do
		dmesg -c > /dev/null
		if insmod "$KO" "split_lock_detect=$value" 2> /dev/null; then
			rmmod amd_sld
			fail "insmod accepted split_lock_detect='$value'"
		fi
		[ ! -e /sys/module/amd_sld ] || fail "module half-loaded after '$value'"
		dmesg | grep -q "amd_sld: invalid split_lock_detect" || fail "no error line for '$value'"
	done
}

params_valid_at_runtime() {
	load
	for case in off=off warn=warn fatal=fatal ratelimit:1=ratelimit:1 ratelimit:1000=ratelimit:1000 \
		ratelimit:007=ratelimit:7 warn=warn; do
		value=${case%%=*}
		echo "$value" > "$PARAM" || fail "echo $value rejected"
		expect_eq "after echo $value" "$(cat $PARAM)" "${case#*=}"
		printf '%s' "$value" > "$PARAM" || fail "printf $value (no newline) rejected"
		expect_eq "after printf $value" "$(cat $PARAM)" "${case#*=}"
	done
	unload
}

params_invalid_at_runtime() {
	load split_lock_detect=ratelimit:7
	echo > "$PARAM" 2> /dev/null && fail "writing an empty line was accepted"
	expect_eq "policy after rejected empty line" "$(cat $PARAM)" "ratelimit:7"
	# Bytes that command substitution would strip (trailing newlines) are written directly.
	printf 'warn\n\n' > "$PARAM" 2> /dev/null && fail "writing 'warn' and two newlines was accepted"
	expect_eq "policy after rejected 'warn\\n\\n'" "$(cat $PARAM)" "ratelimit:7"
	for value in $INVALID "$(head -c 5000 /dev/zero | tr '\0' 9)"; do
		if printf '%s' "$value" > "$PARAM" 2> /dev/null; then
			fail "write of '$value' accepted"
		fi
		expect_eq "policy after rejected '$value'" "$(cat $PARAM)" "ratelimit:7"
	done
	for i in $(seq 1 50); do
		head -c $((i % 24 + 1)) /dev/urandom > /tmp/random.bin
		if cat /tmp/random.bin > "$PARAM" 2> /dev/null; then
			[ "$(cat $PARAM)" != "ratelimit:7" ] || continue # a random valid policy (vanishingly rare)
		fi
		expect_eq "policy after random write $i" "$(cat $PARAM)" "ratelimit:7"
	done
	unload
}

warn_message_and_log_ratelimit() {
	load
	out=$("$BUSLOCK" -n 100) || fail "buslock failed: $out"
	expect_eq "events" "$(field events "$out")" 100
	expect_eq "bus_locks" "$(counter bus_locks)" 100
	expect_eq "warned" "$(counter warned)" 100
	lines=$(dmesg | grep -cE "$KERNEL_LINE_RE")
	expect_eq "log lines for 100 traps in well under 5 s (pr_warn_ratelimited: 10 per 5 s)" "$lines" 10
	sleep 5
	out=$("$BUSLOCK" -n 1) || fail "buslock failed: $out"
	dmesg | grep -q "amd_sld: 90 bus_lock messages suppressed" || fail "no 'suppressed' line after the window"
	expect_eq "log lines after the window" "$(dmesg | grep -cE "$KERNEL_LINE_RE")" 11
	unload
}

# One alert for the fleet: the warn line is the kernel's own (6.13+ bus_lock.c), its pr_fmt
# prefix included, so that a rule written for 6.13+ hosts matches amd_sld's hosts as is.
warn_line_is_the_kernels() {
	load
	out=$("$BUSLOCK" -n 1) || fail "buslock failed: $out"
	pid=$(field pid "$out")
	line=$(dmesg | grep "x86/split lock detection: #" | tail -n 1)
	echo "$line"
	echo "$line" | grep -qxE "(\[ *[0-9.]+\] )?x86/split lock detection: #DB: buslock/$pid took a bus_lock trap at address: 0x[0-9a-f]+" ||
		fail "the warn line is not the kernel's: '$line'"
	echo "$line" | grep -qE "x86/split lock detection: #DB: .* took a bus_lock trap at address: 0x" ||
		fail "the fleet's alert pattern does not match"
	dmesg | grep -qE "amd_sld: #DB: buslock/$pid " && fail "a warn line still carries amd_sld's prefix"
	unload
}

fatal_kills_only_the_offender() {
	load split_lock_detect=fatal
	sleep 60 &
	sibling=$!
	"$BUSLOCK" -n 5 > /tmp/out 2>&1
	status=$?
	expect_eq "offender's exit status (128 + SIGBUS)" "$status" 135
	expect_eq "killed" "$(counter killed)" 1
	expect_eq "bus_locks" "$(counter bus_locks)" 1
	kill -0 "$sibling" 2> /dev/null || fail "the sibling process died too"
	kill "$sibling"
	dmesg | grep -qE "$FATAL_LINE_RE" || fail "no SIGBUS log line"
	unload
}

fatal_cannot_be_blocked_or_ignored() {
	load split_lock_detect=fatal
	"$BUSLOCK" -B -n 3 > /dev/null 2>&1
	expect_eq "exit status with SIGBUS blocked" "$?" 135
	"$BUSLOCK" -I -n 3 > /dev/null 2>&1
	expect_eq "exit status with SIGBUS ignored" "$?" 135
	out=$("$BUSLOCK" -c -n 3) || fail "a handled SIGBUS must not kill: $out"
	expect_eq "SIGBUS delivered to the handler" "$(field sigbus "$out")" 3
	expect_eq "killed" "$(counter killed)" 5
	unload
}

ratelimit_case() { # rate processes
	load "split_lock_detect=ratelimit:$1"
	out=$("$BUSLOCK" -n 0 -t 3000 -p "$2") || fail "buslock failed: $out"
	events=$(field events "$out")
	ms=$(field elapsed_ms "$out")
	rate_x100=$((events * 100000 / ms))
	echo "ratelimit:$1, $2 process(es): $events events in $ms ms = $((rate_x100 / 100)).$((rate_x100 % 100))/s"
	echo "$out" | grep '^process' | sed 's/^/  /'
	[ "$rate_x100" -ge $(($1 * 90)) ] && [ "$rate_x100" -le $(($1 * 110)) ] ||
		fail "achieved rate is not within 10% of $1/s"
	# The budget's bound: in the 3 s window a fresh budget opens, never more than 3 N.
	in_window=$(field in_window "$out")
	echo "in the first 3000 ms: $in_window (bound $(($1 * 3)))"
	[ "$in_window" -le $(($1 * 3)) ] || fail "$in_window bus locks in 3 s under ratelimit:$1"
	[ "$in_window" -ge $(($1 * 3 * 95 / 100)) ] || fail "only $in_window bus locks in 3 s under ratelimit:$1"
	# Offenders are served in turn: shares differ by at most a tenth of a share (or 2).
	shares=$(echo "$out" | sed -n 's/^process[0-9]* pid=[0-9]* events=\([0-9]*\).*/\1/p' | sort -n)
	if [ -n "$shares" ]; then
		low=$(echo "$shares" | head -n 1) high=$(echo "$shares" | tail -n 1)
		slack=$((events / $2 / 10))
		[ "$slack" -ge 2 ] || slack=2
		[ $((high - low)) -le "$slack" ] || fail "unfair shares: $(echo $shares)"
	fi
	[ "$(counter throttled)" -gt 0 ] || fail "no trap was throttled"
	[ "$(counter throttled_ms)" -gt 0 ] || fail "throttled_ms did not grow"
	expect_eq "bus_locks = events" "$(counter bus_locks)" "$events"
	expect_eq "warned = events (throttled traps are warned once through)" "$(counter warned)" "$events"
	unload
}

ratelimit_10_one_process() { ratelimit_case 10 1; }
ratelimit_10_three_processes() { ratelimit_case 10 3; }
ratelimit_100_one_process() { ratelimit_case 100 1; }
ratelimit_100_three_processes() { ratelimit_case 100 3; }

off_disarms_and_keeps_counters() {
	load
	"$BUSLOCK" -n 10 > /dev/null || fail "buslock failed"
	set_policy off
	expect_eq "armed_cpus when off" "$(counter armed_cpus)" ""
	for c in $(seq 0 $(($(nproc) - 1))); do
		[ $(($(debugctl "$c") & 4)) -eq 0 ] || fail "CPU $c still armed"
	done
	out=$("$BUSLOCK" -n 10) || fail "buslock failed: $out"
	expect_eq "bus_locks kept: an unarmed CPU does not trap" "$(counter bus_locks)" 10
	set_policy warn
	expect_eq "armed again" "$(counter armed_cpus)" "$(online_cpus)"
	"$BUSLOCK" -n 5 > /dev/null || fail "buslock failed"
	expect_eq "bus_locks counts on" "$(counter bus_locks)" 15
	unload
}

policy_switches_while_events_flow() {
	load
	"$BUSLOCK" -c -n 0 -t 4000 -p 2 > /tmp/flow.out 2>&1 &
	flow=$!
	i=0
	while [ $i -lt 40 ]; do
		for p in fatal ratelimit:50 off ratelimit:1000 warn; do
			set_policy "$p"
		done
		i=$((i + 1))
	done
	wait $flow || fail "offenders failed: $(cat /tmp/flow.out)"
	expect_eq "final policy" "$(cat $PARAM)" warn
	total=$(($(counter warned) + $(counter killed)))
	[ "$total" -le "$(counter bus_locks)" ] || fail "warned + killed ($total) > bus_locks ($(counter bus_locks))"
	[ "$(counter bus_locks)" -gt 0 ] || fail "no trap while switching"
	unload
}

cpu_offline_online_while_loaded() {
	if [ ! -e /sys/devices/system/cpu/cpu2/online ]; then
		[ -z "$AMD_SLD_EXPECT_CPUS" ] || fail "CPU 2 of $AMD_SLD_EXPECT_CPUS cannot be taken offline"
		skip "CPU 2 cannot be taken offline here"
	fi
	load
	echo 0 > /sys/devices/system/cpu/cpu2/online || fail "offlining CPU 2 failed"
	expect_eq "armed_cpus without CPU 2" "$(counter armed_cpus)" "$(online_cpus)"
	# An offline CPU's MSRs cannot be read, and onlining resets it: armed_cpus is the check.
	out=$("$BUSLOCK" -n 20) || fail "buslock failed: $out"
	expect_eq "traps with a CPU offline" "$(counter bus_locks)" 20
	echo 1 > /sys/devices/system/cpu/cpu2/online || fail "onlining CPU 2 failed"
	expect_eq "armed_cpus with CPU 2 back" "$(counter armed_cpus)" "$(online_cpus)"
	[ $(($(debugctl 2) & 4)) -ne 0 ] || fail "CPU 2 not re-armed"
	set_policy off
	echo 0 > /sys/devices/system/cpu/cpu2/online && echo 1 > /sys/devices/system/cpu/cpu2/online ||
		fail "CPU 2 hotplug with policy off failed"
	expect_eq "no CPU armed when off, after hotplug" "$(counter armed_cpus)" ""
	unload
}

counters_equal_events() {
	load
	"$BUSLOCK" -n 1000 > /dev/null || fail "buslock failed"
	set_policy fatal
	"$BUSLOCK" -n 1 > /dev/null 2>&1
	set_policy ratelimit:1000
	"$BUSLOCK" -n 500 > /dev/null || fail "buslock failed"
	set_policy off
	"$BUSLOCK" -n 50 > /dev/null || fail "buslock failed"
	expect_eq "bus_locks" "$(counter bus_locks)" 1501
	expect_eq "warned" "$(counter warned)" 1500
	expect_eq "killed" "$(counter killed)" 1
	for f in bus_locks warned killed throttled throttled_ms armed_cpus; do
		mode=$(stat -c %a "$SYS/$f" 2> /dev/null || ls -l "$SYS/$f" | cut -c1-10)
		case $mode in 444 | -r--r--r--) ;; *) fail "$f has mode $mode, expected 0444" ;; esac
	done
	unload
}

single_step_and_ptrace_unchanged() {
	before=$("$STEPCHECK") || fail "stepcheck fails even without the module: $before"
	load
	"$BUSLOCK" -n 0 -t 3000 > /dev/null &
	storm=$!
	after=$("$STEPCHECK") || fail "stepcheck with the module loaded and a trap storm running: $after"
	expect_eq "stepcheck output" "$after" "$before"
	wait $storm
	[ "$(counter bus_locks)" -gt 0 ] || fail "the storm made no traps"
	unload
}

kernel_handle_bus_lock_never_called() {
	probe_functions handle_bus_lock send_sigtrap
	load
	"$BUSLOCK" -n 50 > /dev/null || fail "buslock failed"
	"$STEPCHECK" > /dev/null # positive control: plain steps reach send_sigtrap
	calls=$(probe_calls handle_bus_lock) control=$(probe_calls send_sigtrap)
	unprobe_functions handle_bus_lock send_sigtrap
	echo "kprobe hits: handle_bus_lock $calls, send_sigtrap (control) $control"
	[ "${control:-0}" -gt 0 ] || fail "the probe saw no send_sigtrap: the test cannot see calls"
	expect_eq "kernel handle_bus_lock calls for 50 traps" "$calls" 0
	expect_eq "bus_locks" "$(counter bus_locks)" 50
	unload
}

# The seq numbers of records in file $1 that do not follow the previous record of the same
# ring (CPU and source) by one, as "cpu/source:seq"; with $2 = backwards, only those that do
# not exceed it.
ring_seq_gaps() {
	sed 's/^seq=\([0-9]*\) ms=[0-9]* cpu=\([0-9]*\) .* source=\([a-z]*\) .*/\2\/\3 \1/' "$1" |
		awk -v mode="${2:-consecutive}" '{
			if ($1 in last && ((mode == "backwards" && $2 <= last[$1]) ||
			                   (mode != "backwards" && $2 != last[$1] + 1)))
				printf "%s:%s ", $1, $2
			last[$1] = $2
		}'
}

# The bus locks the records of file $1 that match the extended regex $2 stand for: the sum
# of their count= (a trap record counts the identical traps added to it while it was open,
# docs/ABI/sysfs-kernel-amd_sld).
count_sum() {
	grep -E -- "$2" "$1" | sed -n 's/.* count=\([0-9]*\) .*/\1/p' | awk '{ s += $1 } END { print s + 0 }'
}

# The records (cpu, source, seq) shown by both reads of events, $1 then $2, with a different
# count: none, since a reader closes every record it shows (its count is final once read).
counts_changed() {
	awk '{
		key = ""; count = ""
		for (i = 1; i <= NF; i++) {
			split($i, kv, "=")
			if (kv[1] == "seq" || kv[1] == "cpu" || kv[1] == "source") key = key $i " "
			if (kv[1] == "count") count = kv[2]
		}
		if (FNR == NR) first[key] = count
		else if ((key in first) && first[key] != count) printf "%s(%s then %s) ", key, first[key], count
	}' "$1" "$2"
}

EVENT_RE='^seq=[0-9]+ ms=[0-9]+ cpu=[0-9]+ pid=[0-9]+ tid=[0-9]+ comm=[!-~]+ source=(bld|pmu) guest=[01] ip=0x[0-9a-f]+ count=[0-9]+ action=(none|warn|kill|throttle) cgroup=[0-9]+ map=(-|[!-~]+\+0x[0-9a-f]+)$'
TOP_RE='^pid=[0-9]+ comm=[!-~]+ bus_locks=[0-9]+ guest=[01] first_ms=[0-9]+ last_ms=[0-9]+ cgroup=[0-9]+$'

event_record_format_and_attribution() {
	load
	expect_eq "events before any bus lock" "$(cat $SYS/events)" ""
	out=$("$BUSLOCK" -n 5) || fail "buslock failed: $out"
	pid=$(field pid "$out")
	set_policy fatal
	"$BUSLOCK" -n 1 > /tmp/out 2>&1
	set_policy warn
	out=$("$BUSLOCK" -n 3) || fail "buslock failed: $out"
	pid3=$(field pid "$out")
	cat $SYS/events > /tmp/events
	sed 's/^/  /' /tmp/events
	# Identical traps (one thread, one IP, one action) on one CPU share a record until it
	# is read: 3 records at least (three processes), 9 at most (one per trap).
	lines=$(wc -l < /tmp/events)
	[ "$lines" -ge 3 ] && [ "$lines" -le 9 ] || fail "$lines records of 9 traps, expected 3..9"
	expect_eq "bus locks the records stand for" "$(count_sum /tmp/events .)" 9
	bad=$(grep -cvE "$EVENT_RE" /tmp/events)
	expect_eq "lines not in the documented format" "$bad" 0
	# Numbered per CPU and source (each has its ring) from 0, without a gap: every record.
	expect_eq "seq numbers per ring" "$(ring_seq_gaps /tmp/events)" """"
	expect_eq "each ring's first record numbered 0" \
		"$(sed 's/^seq=\([0-9]*\) ms=[0-9]* cpu=\([0-9]*\) .* source=\([a-z]*\) .*/\2\/\3 \1/' /tmp/events |
			awk '!($1 in first) {first[$1] = $2} END {for (r in first) s += first[r]; print s + 0}')" 0
	expect_eq "first offender's bus locks" \
		"$(count_sum /tmp/events " pid=$pid tid=$pid comm=buslock source=bld guest=0 ip=0x[0-9a-f]+ count=[0-9]+ action=warn ")" 5
	expect_eq "records of the first offender, all of them its" \
		"$(grep -c " pid=$pid " /tmp/events)" "$(grep -c " pid=$pid tid=$pid comm=buslock source=bld guest=0 .* action=warn " /tmp/events)"
	expect_eq "killed event" "$(grep -c ' count=1 action=kill cgroup=[0-9]* map=' /tmp/events)" 1
	expect_eq "third offender's bus locks" "$(count_sum /tmp/events " pid=$pid3 .*action=warn ")" 3
	# Read once, final: the records read are closed, their counts do not change.
	expect_eq "a second read" "$(cat $SYS/events)" "$(cat /tmp/events)"
	cat $SYS/top > /tmp/top
	sed 's/^/  /' /tmp/top
	expect_eq "top lines" "$(wc -l < /tmp/top)" 3
	expect_eq "top lines in the documented format" "$(grep -cE "$TOP_RE" /tmp/top)" 3
	expect_eq "top first line" "$(head -n 1 /tmp/top | cut -d' ' -f1-3)" "pid=$pid comm=buslock bus_locks=5"
	expect_eq "dropped" "$(counter dropped)" 0
	for f in events top; do
		mode=$(stat -c %a "$SYS/$f")
		expect_eq "mode of $f (names processes: root only)" "$mode" 400
	done
	unload
}

event_record_bound_and_loss_counted_under_storm() {
	load
	"$BUSLOCK" -n 0 -t 3000 -p 4 > /tmp/storm.out &
	storm=$!
	# Read while the storm runs: a record's count, once read, never changes (the read
	# closed it; later identical traps go to a new record).
	reads=0 changed=""
	cat $SYS/events > /tmp/events.before
	while kill -0 $storm 2> /dev/null; do
		sleep 0.2
		cat $SYS/events > /tmp/events.after
		changed=$changed$(counts_changed /tmp/events.before /tmp/events.after)
		mv /tmp/events.after /tmp/events.before
		reads=$((reads + 1))
	done
	wait $storm || fail "buslock failed: $(cat /tmp/storm.out)"
	echo "$reads reads during the storm"
	[ "$reads" -ge 2 ] || fail "only $reads reads during the storm"
	expect_eq "records whose count changed after a read" "$changed" ""
	cat $SYS/events > /tmp/events
	total=$(counter bus_locks)
	dropped=$(counter dropped)
	echo "storm: $total bus locks from 4 processes on $(nproc) CPUs, dropped=$dropped"
	lines=$(wc -l < /tmp/events)
	[ "$lines" -ge 1 ] && [ "$lines" -le 32 ] || fail "events holds $lines lines, expected 1..32"
	expect_eq "lines not in the documented format" "$(grep -cvE "$EVENT_RE" /tmp/events)" 0
	# Merged in time order; numbered per CPU and source, increasing in each.
	sort -s -n -t= -k3,3 /tmp/events | cmp -s - /tmp/events || fail "records not in time order"
	expect_eq "seq going back within a ring" "$(ring_seq_gaps /tmp/events backwards)" ""
	# Every bus lock got a sequence number in its CPU's ring: the rings shown hold at most
	# all of them.
	numbered=$(sed 's/^seq=\([0-9]*\) ms=[0-9]* cpu=\([0-9]*\) .* source=\([a-z]*\) .*/\2\/\3 \1/' /tmp/events |
		sort -k1,1 -k2,2n | awk '{last[$1] = $2} END {for (r in last) s += last[r] + 1; print s}')
	[ "$numbered" -le "$total" ] || fail "the rings shown numbered $numbered records of $total bus locks"
	# Each trap is added to top or counted as dropped: nothing is lost silently.
	top_sum=$(top_bus_locks)
	[ "$top_sum" -le "$total" ] && [ $((top_sum + dropped)) -ge "$total" ] ||
		fail "top sums to $top_sum of $total bus locks with only $dropped dropped"
	expect_eq "processes in top" "$(wc -l < $SYS/top)" 4
	unload
}

# --- The amd-sld CLI against the live module (its host tests cover parsing and formatting)

AMD_SLD_CLI=$(command -v amd-sld)

need_cli() {
	[ -n "$AMD_SLD_CLI" ] || fail "amd-sld is not on PATH (scripts/build-tools builds it; vmtest copies it)"
}

cli_without_the_module() {
	need_cli
	out=$(amd-sld status 2>&1)
	expect_eq "status exit code without the module" "$?" 3
	echo "$out" | grep -q "module      not loaded" || fail "status does not say 'not loaded': $out"
	expect_eq "status --json without the module" "$(amd-sld status --json 2> /dev/null)" '{"loaded":false}'
	for args in "top --once" "events" "set warn"; do
		amd-sld $args > /dev/null 2> /tmp/err
		expect_eq "'amd-sld $args' exit code without the module" "$?" 3
		grep -q "modprobe amd_sld" /tmp/err || fail "'amd-sld $args' does not say how to load: $(cat /tmp/err)"
	done
	prom=$(amd-sld export --prometheus) || fail "export fails without the module"
	echo "$prom" | grep -qx "amd_sld_up 0" || fail "export without the module lacks 'amd_sld_up 0': $prom"
}

cli_status_matches_sysfs() {
	need_cli
	load split_lock_detect=ratelimit:50
	out=$("$BUSLOCK" -n 7) || fail "buslock failed: $out"
	json=$(amd-sld status --interval 0 --json) || fail "status --json failed"
	echo "$json"
	source="bld+pmu(guest)" sees="host tasks by the trap, each bus lock; KVM guests by the PMU"
	kernel_arms_the_trap && source=pmu sees="host and KVM guests by the PMU"
	for pair in '"loaded":true' '"policy":"ratelimit:50"' "\"source\":\"$source\"" '"requested_source":"auto"' \
		"\"armed_cpus\":\"$(online_cpus)\"" "\"armed_cpu_count\":$(nproc)" '"bus_locks":7' \
		"\"throttled\":$(counter throttled)" "\"throttled_ms\":$(counter throttled_ms)" \
		"\"dropped\":$(counter dropped)"; do
		echo "$json" | grep -qF "$pair" || fail "status --json lacks $pair"
	done
	text=$(amd-sld status --interval 1) || fail "status failed"
	echo "$text"
	echo "$text" | grep -qE '^policy +ratelimit:50$' || fail "status text lacks the policy"
	echo "$text" | grep -qF "source      $source (requested: auto): $sees" || fail "status text does not say which detector sees what"
	echo "$text" | grep -qE '^bus_locks +7 +0\.0$' || fail "status text: bus_locks should be 7 at 0.0/s"
	unload
}

cli_set_validates_and_changes_the_live_policy() {
	need_cli
	load
	amd-sld set ratelimit:5 || fail "set ratelimit:5 failed"
	expect_eq "policy after 'amd-sld set ratelimit:5'" "$(cat $PARAM)" "ratelimit:5"
	for bad in ratelimit:0 ratelimit:1001 WARN "warn " ""; do
		amd-sld set "$bad" > /dev/null 2> /tmp/err
		expect_eq "exit code of 'set $bad'" "$?" 2
		[ -s /tmp/err ] || fail "'set $bad' failed without a message"
		expect_eq "policy after rejected '$bad'" "$(cat $PARAM)" "ratelimit:5"
	done
	amd-sld set --source pmu || fail "set --source pmu failed"
	expect_eq "source after 'set --source pmu'" "$(counter source)" pmu
	if kernel_arms_the_trap; then
		amd-sld set --source bld > /dev/null 2> /tmp/err && fail "set --source bld accepted where the kernel arms the trap"
		[ -s /tmp/err ] || fail "the refused 'set --source bld' said nothing"
		expect_eq "source after the refused 'set --source bld'" "$(counter source)" pmu
	else
		amd-sld set --source bld || fail "set --source bld failed"
		expect_eq "source after 'set --source bld'" "$(counter source)" bld
	fi
	amd-sld set --source nonsense > /dev/null 2>&1
	expect_eq "exit code of 'set --source nonsense'" "$?" 2
	unload
}

cli_top_events_and_export_name_the_offender() {
	need_cli
	load
	out=$("$BUSLOCK" -n 4) || fail "buslock failed: $out"
	pid=$(field pid "$out")
	top=$(amd-sld top --once) || fail "top --once failed"
	echo "$top"
	echo "$top" | grep -qE "^ *$pid +buslock +4( |$)" || fail "top does not show pid $pid (buslock) with 4"
	expect_eq "events --raw is the kernel's record" "$(amd-sld events --raw)" "$(cat $SYS/events)"
	# One line per record; identical traps share a record: the counts add up to the 4.
	expect_eq "bus locks of pid $pid in events" "$(amd-sld events |
		sed -n "s/^.*buslock (pid $pid, tid $pid, cgroup [^)]*): \([0-9]*\) bus locks\{0,1\} (bld), ip 0x.*/\1/p" |
		awk '{ s += $1 } END { print s + 0 }')" 4
	prom=$(amd-sld export --prometheus) || fail "export failed"
	for line in "amd_sld_up 1" "amd_sld_bus_locks_total 4" "# TYPE amd_sld_bus_locks_total counter"; do
		echo "$prom" | grep -qxF "$line" || fail "export lacks '$line'"
	done
	echo "$prom" | grep -qxE "amd_sld_offender_bus_locks\{pid=\"$pid\",comm=\"buslock\",cgroup=\"[^\"]+\"\} 4" ||
		fail "export lacks the offender buslock/$pid with 4"
	unload
}

# A follower (`amd-sld events --follow`, which remembers the last seq of each ring) polling
# while one thread's identical traps are added to open records prints each record once,
# with its final count: a read closes every record it shows, so the counts it printed add up
# to the bus locks, none missed by a record that grew after it was printed.
cli_follower_counts_every_bus_lock() {
	need_cli
	load
	amd-sld events --follow --raw --interval 0.02 > /tmp/follow 2> /tmp/follow.err &
	follower=$!
	sleep 0.5
	out=$("$BUSLOCK" -n 20000) || { kill $follower; fail "buslock failed: $out"; }
	pid=$(field pid "$out")
	sleep 1
	kill $follower
	wait $follower
	echo "$(wc -l < /tmp/follow) records followed, of $(grep -c " pid=$pid " /tmp/follow) buslock/$pid's"
	sed 's/^/  /' /tmp/follow | tail -n 5
	[ -s /tmp/follow.err ] && fail "the follower reported: $(cat /tmp/follow.err)"
	expect_eq "bus_locks" "$(counter bus_locks)" 20000
	expect_eq "bus locks of buslock/$pid's records followed" "$(count_sum /tmp/follow " pid=$pid ")" 20000
	expect_eq "dropped" "$(counter dropped)" 0
	unload
}

# Which container: a bus-lock offender run inside a cgroup v2 of its own is recorded with
# that cgroup's ID (the kernfs ID, its directory's inode), which the CLI turns back into the
# path in events and top, filters by (--cgroup) and groups by (top --by cgroup), and which
# the Prometheus export labels by. By the trap (4 bus locks, each recorded) or, where the
# kernel owns the trap, by the PMU (a 1 s offender, sampled).
cgroup_recorded_and_resolved_by_the_cli() {
	need_cli
	[ -e /proc/self/cgroup ] || skip "a kernel without CONFIG_CGROUPS"
	mounted=""
	if ! grep -q "^[^ ]* [^ ]* cgroup2 " /proc/self/mounts; then
		mount -t cgroup2 none /sys/fs/cgroup || fail "cannot mount cgroup2 on /sys/fs/cgroup"
		mounted=1
	fi
	mnt=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/self/mounts)
	cg=/amd-sld-test/job
	mkdir -p "$mnt$cg" || fail "cannot create the cgroup $mnt$cg"
	id=$(stat -c %i "$mnt$cg")
	if kernel_arms_the_trap; then
		load source=pmu
		run="$BUSLOCK -n 0 -t 1000 -r 3000"
	else
		load
		run="$BUSLOCK -n 4"
	fi
	out=$(sh -c "echo \$\$ > $mnt$cg/cgroup.procs && exec $run") || fail "buslock in $cg failed: $out"
	pid=$(field pid "$out")
	echo "buslock/$pid ran in $cg (cgroup ID $id), source $(counter source)"
	records=$(grep -c " pid=$pid .* cgroup=$id " $SYS/events)
	[ "$records" -ge 1 ] || fail "no record of pid $pid with cgroup=$id: $(cat $SYS/events)"
	[ "$(counter source)" = pmu ] ||
		expect_eq "bus locks of pid $pid recorded with cgroup=$id" "$(count_sum $SYS/events " pid=$pid .* cgroup=$id ")" 4
	locks=$(sed -n "s/^pid=$pid comm=buslock bus_locks=\([0-9]*\) .* cgroup=$id$/\1/p" $SYS/top)
	[ -n "$locks" ] || fail "top has no buslock/$pid in cgroup $id: $(cat $SYS/top)"
	events=$(amd-sld events) || fail "events failed"
	expect_eq "events naming $cg" "$(echo "$events" | grep -c "buslock (pid $pid, tid $pid, cgroup $cg): [0-9]* bus lock")" "$records"
	expect_eq "events --cgroup /amd-sld-test" "$(amd-sld events --cgroup /amd-sld-test | grep -c "(pid $pid, ")" "$records"
	expect_eq "events --cgroup /amd-sld-tes (not a whole component)" "$(amd-sld events --cgroup /amd-sld-tes | wc -l)" 0
	top=$(amd-sld top --once) || fail "top --once failed"
	echo "$top"
	echo "$top" | grep -qE "^ *$pid +buslock +$locks .* $cg$" || fail "top does not show buslock/$pid in $cg"
	top=$(amd-sld top --once --by cgroup --cgroup /amd-sld-test) || fail "top --by cgroup failed"
	echo "$top"
	echo "$top" | grep -qE "^$cg +1 +$locks " || fail "top --by cgroup has no row of $cg with 1 process and $locks bus locks"
	expect_eq "rows of top --by cgroup --cgroup /amd-sld-test" "$(echo "$top" | grep -c "^/")" 1
	prom=$(amd-sld export --prometheus) || fail "export failed"
	echo "$prom" | grep cgroup
	for line in "amd_sld_offender_bus_locks{pid=\"$pid\",comm=\"buslock\",cgroup=\"$cg\"} $locks" \
		"amd_sld_cgroup_bus_locks{cgroup=\"$cg\"} $locks"; do
		echo "$prom" | grep -qxF "$line" || fail "export lacks '$line'"
	done
	unload
	rmdir "$mnt$cg" "$mnt/amd-sld-test" || fail "cannot remove the test cgroups"
	[ -z "$mounted" ] || umount "$mnt"
}

cli_needs_root_to_act_and_says_so() {
	need_cli
	load
	as_nobody amd-sld set fatal > /dev/null 2> /tmp/err
	expect_eq "exit code of 'set fatal' as uid 65534" "$?" 4
	grep -q "root" /tmp/err || fail "no word of root in: $(cat /tmp/err)"
	expect_eq "policy after the unprivileged set" "$(cat $PARAM)" warn
	for args in "top --once" "events"; do
		as_nobody amd-sld $args > /dev/null 2>&1
		expect_eq "exit code of '$args' as uid 65534 (the records name processes)" "$?" 4
	done
	as_nobody amd-sld status --interval 0 > /dev/null || fail "status must work for any user"
	unload
}

# --- The PMU source: the emulated core PMU counting ls_locks.bus_lock (scripts/qemu)

pmu_counts_exactly_and_attributes() {
	# DEBUGCTL as found: 0, or BUS_LOCK_DETECT where the kernel arms the trap itself.
	for c in $(seq 0 $(($(nproc) - 1))); do eval "debugctl_$c=\$(debugctl $c)"; done
	load source=pmu
	expect_eq "source in effect" "$(counter source)" pmu
	expect_eq "source parameter" "$(cat /sys/module/amd_sld/parameters/source)" pmu
	expect_eq "armed_cpus (a counter on each)" "$(counter armed_cpus)" "$(online_cpus)"
	for c in $(seq 0 $(($(nproc) - 1))); do
		eval "before=\$debugctl_$c"
		expect_eq "CPU $c DEBUGCTL untouched by the PMU source" "$(debugctl "$c")" "$before"
	done
	# Sustained offenders, as sampling sees them in production: 2 s at three rates.
	"$BUSLOCK" -n 0 -t 2000 -r 3000 > /tmp/a.out & a=$!
	"$BUSLOCK" -n 0 -t 2000 -r 1000 > /tmp/b.out & b=$!
	"$BUSLOCK" -n 0 -t 2000 -r 300 > /tmp/c.out & c=$!
	wait $a && wait $b && wait $c || fail "buslock failed"
	total=0
	for x in a b c; do total=$((total + $(field events "$(cat /tmp/$x.out)"))); done
	expect_eq "bus_locks (exact, from counter reads)" "$(counter bus_locks)" "$total"
	expect_eq "uncounted_cpus (every tally counted all along)" "$(counter uncounted_cpus)" ""
	cat $SYS/top > /tmp/top
	sed 's/^/  /' /tmp/top
	for x in a b c; do eval "pid_$x=\$(field pid \"\$(cat /tmp/$x.out)\")"; done
	for pid in $pid_a $pid_b $pid_c; do
		grep -q "^pid=$pid comm=buslock " /tmp/top || fail "process $pid missing from top"
	done
	# Each sample charges the count since that CPU's previous sample to the task it
	# interrupted (docs/design.md): the charges never exceed the exact total; what follows a
	# CPU's last sample is not charged to anyone.
	attributed=$(top_bus_locks /tmp/top)
	echo "attributed by samples: $attributed of $total exact (dropped $(counter dropped))"
	[ "$attributed" -le "$total" ] || fail "samples over-attribute: $attributed of $total bus locks"
	# Measured: 73% to 96% (docs/design.md); less than half would mean samples go missing.
	[ "$attributed" -ge $((total / 2)) ] || fail "samples attribute only $attributed of $total bus locks"
	top_pid=$(head -n 1 /tmp/top | sed 's/^pid=\([0-9]*\) .*/\1/')
	expect_eq "heaviest process (3000/s) first in top" "$top_pid" "$pid_a"
	expect_eq "event lines in the documented format" "$(grep -cvE "$EVENT_RE" $SYS/events)" 0
	# The record keeps the newest 32 samples, of whichever offender ran last.
	grep -qE " pid=($pid_a|$pid_b|$pid_c) tid=[0-9]+ comm=buslock source=pmu guest=0 ip=0x[0-9a-f]+ count=[0-9]+ action=warn cgroup=[0-9]+ map=" $SYS/events ||
		fail "no pmu event attributed to an offender"
	dmesg | grep -qE "amd_sld: PMU: buslock/[0-9]+ caused [0-9]+ bus locks$" || fail "no PMU warn line"
	unload
	dmesg | grep -q "amd_sld: unloaded: $total bus locks .*PMU counters released on CPUs $(online_cpus)\$" ||
		fail "unload line does not give the exact total"
}

pmu_fatal_hits_the_sampled_task_only() {
	load source=pmu split_lock_detect=fatal
	# A bystander shares CPU 1 with the offender: context switches between them must not move
	# the SIGBUS to the wrong task.
	taskset -c 1 sh -c 'i=0; while [ $i -lt 200000 ]; do i=$((i + 1)); done' & bystander=$!
	taskset -c 1 "$BUSLOCK" -n 100000 > /tmp/out 2>&1
	expect_eq "offender's exit status (128 + SIGBUS)" "$?" 135
	kill -0 $bystander 2> /dev/null || fail "the bystander died"
	kill $bystander
	[ "$(counter killed)" -ge 1 ] || fail "killed did not count"
	grep -q "comm=sh .*action=kill" $SYS/events && fail "a kill was attributed to the bystander"
	dmesg | grep -qE "amd_sld: PMU: buslock/[0-9]+ caused [0-9]+ bus locks, sending SIGBUS" || fail "no kill line"
	unload
}

pmu_ratelimit_case() { # rate processes
	load source=pmu "split_lock_detect=ratelimit:$1"
	out=$("$BUSLOCK" -n 0 -t 4000 -p "$2") || fail "buslock failed: $out"
	events=$(field events "$out")
	ms=$(field elapsed_ms "$out")
	rate_x100=$((events * 100000 / ms))
	echo "pmu ratelimit:$1, $2 process(es): $events bus locks in $ms ms = $((rate_x100 / 100)).$((rate_x100 % 100))/s"
	expect_eq "bus_locks = bus locks made" "$(counter bus_locks)" "$events"
	[ "$(counter throttled)" -gt 0 ] || fail "no sample was throttled"
	# Samples report bus locks after the fact: each offender's first sample is unpaced.
	[ "$rate_x100" -ge $(($1 * 80)) ] && [ "$rate_x100" -le $(($1 * 120)) ] ||
		fail "achieved rate is not within 20% of $1/s"
	unload
}

pmu_ratelimit_100_one_process() { pmu_ratelimit_case 100 1; }
pmu_ratelimit_100_three_processes() { pmu_ratelimit_case 100 3; }

pmu_storm_interrupts_bounded() {
	load source=pmu
	out=$("$BUSLOCK" -n 0 -t 3000 -p 4) || fail "buslock failed: $out"
	events=$(field events "$out")
	ms=$(field elapsed_ms "$out")
	# Samples numbered in the rings shown (each CPU's PMU ring numbers its own from 0).
	samples=$(sed 's/^seq=\([0-9]*\) ms=[0-9]* cpu=\([0-9]*\) .*/\2 \1/' $SYS/events |
		sort -k1,1 -k2,2n | awk '{last[$1] = $2} END {for (c in last) s += last[c] + 1; print s + 0}')
	per_cpu_s=$((samples * 1000 / ms / $(nproc)))
	echo "storm: $events bus locks in $ms ms from 4 processes: $samples samples, $per_cpu_s per CPU per second (bound: 2 x 100)"
	expect_eq "bus_locks exact under the storm" "$(counter bus_locks)" "$events"
	[ "$per_cpu_s" -le 200 ] || fail "$per_cpu_s overflow samples per CPU per second"
	unload
}

pmu_cpu_hotplug() {
	[ -e /sys/devices/system/cpu/cpu2/online ] || skip "CPU 2 cannot be taken offline here"
	load source=pmu
	"$BUSLOCK" -n 200 > /dev/null || fail "buslock failed"
	echo 0 > /sys/devices/system/cpu/cpu2/online || fail "offlining CPU 2 failed"
	expect_eq "armed_cpus without CPU 2" "$(counter armed_cpus)" "$(online_cpus)"
	"$BUSLOCK" -n 300 > /dev/null || fail "buslock failed"
	echo 1 > /sys/devices/system/cpu/cpu2/online || fail "onlining CPU 2 failed"
	expect_eq "armed_cpus with CPU 2 back" "$(counter armed_cpus)" "$(online_cpus)"
	taskset -c 2 "$BUSLOCK" -n 100 > /dev/null || fail "buslock on CPU 2 failed"
	expect_eq "bus_locks across hotplug (offline counts folded in)" "$(counter bus_locks)" 600
	unload
}

source_switches_at_runtime() {
	load
	SRC=/sys/module/amd_sld/parameters/source
	expect_eq "auto resolves to the trap and guest-only counters on (emulated) Zen 5" "$(counter source)" "bld+pmu(guest)"
	for bad in PMU pm "pmu pmu" Auto; do
		printf '%s' "$bad" > $SRC 2> /dev/null && fail "source '$bad' accepted"
		expect_eq "source after rejected '$bad'" "$(counter source)" "bld+pmu(guest)"
	done
	echo > $SRC 2> /dev/null && fail "an empty line was accepted as a source"
	printf 'pmu\n\n' > $SRC 2> /dev/null && fail "'pmu' and two newlines accepted"
	expect_eq "source after rejected writes" "$(counter source)" "bld+pmu(guest)"
	"$BUSLOCK" -n 10 > /dev/null || fail "buslock failed"
	echo pmu > $SRC || fail "switching to pmu failed"
	expect_eq "source" "$(counter source)" pmu
	expect_eq "parameter" "$(cat $SRC)" pmu
	for c in $(seq 0 $(($(nproc) - 1))); do
		expect_eq "CPU $c DEBUGCTL restored by the switch" "$(debugctl "$c")" 0
	done
	# Offenders keep running across the switches; each source counts what it saw.
	"$BUSLOCK" -c -n 0 -t 3000 -p 2 > /tmp/flow.out & flow=$!
	for i in 1 2 3 4 5; do
		echo bld > $SRC && echo pmu > $SRC || fail "switch $i failed"
		"$BUSLOCK" -n 50 > /dev/null || fail "pmu bus locks after switch $i failed"
	done
	wait $flow || fail "offenders failed"
	[ "$(counter bus_locks)" -ge 260 ] || fail "bus_locks $(counter bus_locks): counts lost across switches"
	expect_eq "armed_cpus" "$(counter armed_cpus)" "$(online_cpus)"
	echo auto > $SRC || fail "switching to auto failed"
	expect_eq "auto again" "$(counter source)" "bld+pmu(guest)"
	expect_eq "CPU 1 guest-only counters again" "$(bus_lock_selects 1)" "guest guest"
	[ $(($(debugctl 1) & 4)) -ne 0 ] || fail "CPU 1 not re-armed for the trap"
	unload
}

pmu_unload_under_load() {
	load source=pmu split_lock_detect=ratelimit:5
	"$BUSLOCK" -n 0 -t 6000 -p 3 > /dev/null 2>&1 & flow=$!
	sleep 2
	[ "$(counter throttled)" -gt 0 ] || fail "nothing throttled before unload"
	unload
	wait $flow || fail "offenders failed after unload"
}

debugctl_rmw_preserves_other_bits() {
	load split_lock_detect=off
	"$MSR" 1 0x1d9 0x1 || fail "cannot write DEBUGCTL" # LBR, owned by others
	set_policy warn
	expect_eq "CPU 1 DEBUGCTL armed" "$(debugctl 1)" 5
	set_policy off
	expect_eq "CPU 1 DEBUGCTL disarmed" "$(debugctl 1)" 1
	"$MSR" 1 0x1d9 0x0
	unload
}

# The core PMU's event selects of CPU $1 programmed for ls_locks.bus_lock (event 0x25,
# umask 0x01, enabled), by the modes they count: "guest" (GuestOnly, bit 40), "host"
# (HostOnly, bit 41) or "all"; space-separated, in counter order.
bus_lock_selects() { # cpu
	selects=""
	for i in 0 1 2 3 4 5; do
		v=$("$MSR" "$1" $((0xc0010200 + 2 * i))) || fail "cannot read PERF_CTL$i of CPU $1"
		[ $((v & 0xffff)) -eq $((0x0125)) ] && [ $(((v >> 22) & 1)) -eq 1 ] || continue
		case $(((v >> 40) & 3)) in
		1) selects="$selects guest" ;;
		2) selects="$selects host" ;;
		*) selects="$selects all" ;;
		esac
	done
	echo $selects
}

# Issue 16, item 1: auto on Zen 5 runs both detectors, each where the other is blind: the
# trap for the host's tasks (exact, per bus lock), and a pinned tally and a sampler of
# guest mode only (GuestOnly) on every CPU, for KVM guests. A host bus lock is counted once:
# the guest-only counters count nothing outside guest mode (here EFER.SVME is clear, so
# nothing at all: scripts/qemu README).
auto_runs_the_trap_and_guest_only_counters() {
	cpus=$(online_cpus)
	dmesg -c > /dev/null
	load
	expect_eq "source in effect" "$(counter source)" "bld+pmu(guest)"
	expect_eq "source parameter" "$(cat /sys/module/amd_sld/parameters/source)" auto
	expect_eq "armed_cpus" "$(counter armed_cpus)" "$cpus"
	expect_eq "lines saying why" "$(dmesg | grep -c 'amd_sld: source=auto: Bus Lock Detect for the host, PMU for KVM guests: this CPU has Bus Lock Detect')" 1
	for c in $(seq 0 $(($(nproc) - 1))); do
		[ $(($(debugctl "$c") & 4)) -ne 0 ] || fail "CPU $c: DEBUGCTL bit 2 not set"
		expect_eq "CPU $c ls_locks.bus_lock counters (tally and sampler)" "$(bus_lock_selects "$c")" "guest guest"
	done
	# Host bus locks: the trap's, once each; nothing from the PMU.
	out=$("$BUSLOCK" -n 1000) || fail "buslock failed: $out"
	expect_eq "bus_locks of 1000 host bus locks (trap only, no double count)" "$(counter bus_locks)" 1000
	expect_eq "guest_bus_locks (no guest ran)" "$(counter guest_bus_locks)" 0
	expect_eq "warned (the trap's policy, per bus lock)" "$(counter warned)" 1000
	expect_eq "events of the PMU" "$(grep -c ' source=pmu ' $SYS/events)" 0
	grep -q ' source=bld guest=0 ' $SYS/events || fail "no trap event"
	# Policies per source: fatal by the trap, per bus lock; off disarms both detectors.
	set_policy fatal
	"$BUSLOCK" -c -n 3 > /tmp/fatal.out || fail "buslock -c failed"
	expect_eq "SIGBUSes caught under fatal" "$(field sigbus "$(cat /tmp/fatal.out)")" 3
	expect_eq "killed" "$(counter killed)" 3
	set_policy off
	expect_eq "armed_cpus under off" "$(counter armed_cpus)" ""
	for c in $(seq 0 $(($(nproc) - 1))); do
		expect_eq "CPU $c DEBUGCTL under off" "$(debugctl "$c")" 0
		expect_eq "CPU $c counters under off" "$(bus_lock_selects "$c")" ""
	done
	set_policy warn
	expect_eq "CPU 1 both again under warn" "$(($(debugctl 1) & 4)) $(bus_lock_selects 1)" "4 guest guest"
	# Hotplug: a CPU comes back with both.
	echo 0 > /sys/devices/system/cpu/cpu1/online || fail "cannot offline CPU 1"
	echo 1 > /sys/devices/system/cpu/cpu1/online || fail "cannot online CPU 1"
	expect_eq "armed_cpus after hotplug" "$(counter armed_cpus)" "$cpus"
	expect_eq "CPU 1 both after hotplug" "$(($(debugctl 1) & 4)) $(bus_lock_selects 1)" "4 guest guest"
	expect_eq "guest_uncounted_cpus" "$(counter guest_uncounted_cpus)" ""
	# One source each, on request: pmu counts every mode, bld is the trap alone.
	SRC=/sys/module/amd_sld/parameters/source
	echo pmu > $SRC || fail "switching to pmu failed"
	expect_eq "CPU 1 with pmu" "$(($(debugctl 1) & 4)) $(bus_lock_selects 1)" "0 all all"
	echo bld > $SRC || fail "switching to bld failed"
	expect_eq "CPU 1 with bld" "$(($(debugctl 1) & 4)) $(bus_lock_selects 1)" "4 "
	echo auto > $SRC || fail "switching to auto failed"
	expect_eq "source with auto again" "$(counter source)" "bld+pmu(guest)"
	before=$(counter bus_locks)
	"$BUSLOCK" -n 100 > /dev/null || fail "buslock failed"
	expect_eq "bus_locks after 100 more" "$(counter bus_locks)" $((before + 100))
	unload
	dmesg | grep -q "amd_sld: unloaded: .*guest PMU counters released, DEBUGCTL restored on CPUs $cpus\$" ||
		fail "no unload line releasing both on CPUs $cpus"
	for c in $(seq 0 $(($(nproc) - 1))); do
		expect_eq "CPU $c after unload" "$(debugctl "$c") $(bus_lock_selects "$c")" "0 "
	done
}

# The same with kvm_amd loaded, on a kernel whose KVM keeps the host's DEBUGCTL out of its
# guests (Debian's trixie, 6.12.19+): KVM sets EFER.SVME on every CPU at load (6.12's
# kvm.enable_virt_at_load), so the GuestOnly counters are live, and still count no host
# bus lock: auto keeps both detectors, and a host bus lock is counted once.
auto_with_kvm_amd_counts_host_bus_locks_once() { # zen5, trixie
	kvm_amd_insmod 2> /tmp/kvm.err || fail "kvm_amd does not load: $(cat /tmp/kvm.err)"
	efer=$("$MSR" 1 0xc0000080) || fail "cannot read EFER of CPU 1"
	echo "CPU 1 EFER with kvm_amd loaded: $(printf '%#x' "$efer")"
	[ $(((efer >> 12) & 1)) -eq 1 ] || fail "EFER.SVME clear with kvm_amd loaded: the GuestOnly counters are not live"
	load
	expect_eq "source with kvm_amd loaded" "$(counter source)" "bld+pmu(guest)"
	for c in $(seq 0 $(($(nproc) - 1))); do
		expect_eq "CPU $c trap and guest-only counters" "$(($(debugctl "$c") & 4)) $(bus_lock_selects "$c")" "4 guest guest"
	done
	out=$("$BUSLOCK" -n 500) || fail "buslock failed: $out"
	expect_eq "bus_locks of 500 host bus locks with SVM on (no double count)" "$(counter bus_locks)" 500
	expect_eq "guest_bus_locks (no guest ran)" "$(counter guest_bus_locks)" 0
	unload
	kvm_amd_rmmod
}

# --- The emulated CPU's fault cases (scripts/vmtest --machine)

# Issue 13, item 1: every load fails after /sys/kernel/amd_sld exists (DEBUGCTL ignores
# the write: EIO); readers of bus_locks meanwhile must not hang the failed insmod.
failed_loads_race_counter_readers() { # zen5-debugctl-ignored
	rm -f /tmp/loads.done
	echo 0 > /tmp/loads.count
	for r in 1 2 3; do
		(while :; do cat $SYS/bus_locks > /dev/null 2>&1; done) &
		readers="$readers $!"
	done
	(i=0; while [ $i -lt 200 ]; do
		insmod "$KO" 2> /dev/null && rmmod amd_sld
		i=$((i + 1))
		echo $i > /tmp/loads.count
	done; echo $i > /tmp/loads.done) &
	# A hang shows as no progress: fail after 60 s without a load finishing.
	waited=0 stalled=0 last=0
	while [ ! -e /tmp/loads.done ] && [ $stalled -lt 60 ]; do
		sleep 1
		waited=$((waited + 1))
		count=$(cat /tmp/loads.count)
		if [ "$count" = "$last" ]; then stalled=$((stalled + 1)); else stalled=0 last=$count; fi
	done
	kill $readers 2> /dev/null
	if [ ! -e /tmp/loads.done ]; then
		grep -l 'State:.*D' /proc/[0-9]*/status 2> /dev/null | while read -r f; do
			echo "D state: $(sed -n 's/^Name:\t//p' "$f")"
		done
		fail "no failed load finished for 60 s after $last of 200: insmod hung"
	fi
	echo "200 failed loads in ${waited} s"
	[ ! -e /sys/module/amd_sld ] || fail "module half-loaded"
}

arming_failure_is_all_or_nothing() { # zen5-debugctl-ignored: DEBUGCTL reads back 0
	if insmod "$KO" 2> /tmp/insmod.err; then
		rmmod amd_sld
		fail "loaded on CPUs that ignore DEBUGCTL writes"
	fi
	grep -q "Input/output error" /tmp/insmod.err || fail "insmod error is not EIO: $(cat /tmp/insmod.err)"
	dmesg | grep -q "DEBUGCTL ignored the write of bit 2" || fail "no error line at load"
	[ ! -e /sys/module/amd_sld ] || fail "module half-loaded"
	load split_lock_detect=off
	if echo warn > "$PARAM" 2> /dev/null; then
		fail "turning detection on succeeded on CPUs that ignore DEBUGCTL writes"
	fi
	expect_eq "policy kept" "$(cat $PARAM)" off
	expect_eq "no CPU armed" "$(counter armed_cpus)" ""
	echo pmu > /sys/module/amd_sld/parameters/source || fail "the PMU source must still work"
	set_policy warn
	expect_eq "armed with the PMU" "$(counter armed_cpus)" "$(online_cpus)"
	unload
}

# insmod with these arguments must fail with ENODEV, log the reason, and leave nothing.
expect_refusal() { # "insmod arguments" "log line (basic regex)" ["insmod error", default ENODEV's]
	# shellcheck disable=SC2086 # the arguments are words
	if insmod "$KO" $1 2> /tmp/insmod.err; then
		rmmod amd_sld
		fail "insmod $1 loaded here"
	fi
	grep -q "${3:-No such device}" /tmp/insmod.err || fail "insmod error is not '${3:-No such device}': $(cat /tmp/insmod.err)"
	dmesg | grep -q "$2" || fail "no refusal line: $(dmesg | grep amd_sld)"
	[ ! -e /sys/module/amd_sld ] || fail "module present after refusal"
}

# With the default source=auto, the module takes the source there is and counts exactly.
auto_counts_with() { # source program n why: auto takes source, saying why in one line
	dmesg -c > /dev/null
	load
	expect_eq "the source auto takes here" "$(counter source)" "$1"
	expect_eq "lines saying why auto took $1" "$(dmesg | grep -c 'amd_sld: source=auto: ')" 1
	dmesg | grep -q "amd_sld: source=auto: $4" || fail "no line 'source=auto: $4': $(dmesg | grep 'source=auto')"
	out=$("$2" -n "$3") || fail "$2 failed: $out"
	expect_eq "bus_locks of $3 bus locks by $(basename "$2") ($1)" "$(counter bus_locks)" "$3"
	unload
}

refuses_pmu_without_a_pmu() { # zen5-nopmu
	expect_refusal source=pmu "amd_sld: not loading: source=pmu: the PMU cannot count ls_locks.bus_lock here"
	# auto wants the trap and guest-only counters; without a PMU, the trap alone, in one line.
	auto_counts_with bld "$BUSLOCK" 10 "Bus Lock Detect for the host, PMU for KVM guests: this CPU has Bus Lock Detect and the kernel leaves it to amd_sld"
	expect_eq "lines saying guests are not covered" "$(dmesg | grep -c 'amd_sld: the PMU cannot count ls_locks.bus_lock in guest mode here (.*): Bus Lock Detect alone, bus locks in KVM guests are not covered$')" 1
	dmesg | grep -q "amd_sld: loaded: split_lock_detect=warn, source=bld, " || fail "the load line does not say source=bld"
	# A switch to auto falls back the same way, and stays on the trap.
	load source=bld
	echo auto > /sys/module/amd_sld/parameters/source || fail "switching to auto failed"
	expect_eq "source after auto without a PMU" "$(counter source)" bld
	expect_eq "armed_cpus" "$(counter armed_cpus)" "$(online_cpus)"
	[ $(($(debugctl 1) & 4)) -ne 0 ] || fail "CPU 1 not armed for the trap"
	"$BUSLOCK" -n 7 > /dev/null || fail "buslock failed"
	expect_eq "bus_locks by the trap alone" "$(counter bus_locks)" 7
	unload
}

refuses_bld_without_bus_lock_detect() { # zen4: a PMU, no trap
	expect_refusal source=bld "amd_sld: not loading: this AMD CPU has no Bus Lock Detect (CPUID 0x7 ECX\[24\] is clear"
	auto_counts_with pmu "$LOCKWAIT" 500 "pmu, not Bus Lock Detect: this AMD CPU has no Bus Lock Detect"
}

# Debian's stock 7.x (vmtest --kernel sid): the kernel arms Bus Lock Detect itself, so the
# trap is its own; the PMU is amd_sld's, and auto takes it. Not a missing feature: EBUSY.
refuses_bld_where_the_kernel_arms_it() { # zen5, mainline
	expect_refusal source=bld "amd_sld: not loading: this kernel (6.13 or later) arms AMD bus-lock detection itself" \
		"Device or resource busy"
	auto_counts_with pmu "$LOCKWAIT" 500 "pmu, not Bus Lock Detect: this kernel (6.13 or later) arms"
}

# Issue 15: where the kernel arms Bus Lock Detect itself (6.13+, its default warn), the trap
# and its #DB are the kernel's alone: amd_sld leaves DEBUGCTL as the kernel set it, is not on
# the die notifier chain (it never calls register_die_notifier(), which a kprobe counts
# across its load), and the kernel's handle_bus_lock() logs each user bus lock as it does without
# amd_sld; beside it, amd_sld's PMU source counts the same bus locks exactly and acts.
kernel_owns_the_trap_with_amd_sld_loaded() { # zen5, mainline
	for c in $(seq 0 $(($(nproc) - 1))); do
		eval "debugctl_$c=\$(debugctl $c)"
		eval "before=\$debugctl_$c"
		expect_eq "CPU $c DEBUGCTL bit 2 (armed by the kernel)" $((before & 4)) 4
	done
	probe_functions handle_bus_lock register_die_notifier
	load
	registered=$(probe_calls register_die_notifier)
	expect_eq "source" "$(counter source)" pmu
	for c in $(seq 0 $(($(nproc) - 1))); do
		eval "before=\$debugctl_$c"
		expect_eq "CPU $c DEBUGCTL with amd_sld loaded" "$(debugctl "$c")" "$before"
	done
	dmesg -c > /dev/null
	sleep 6 # a fresh window of the kernel's pr_warn_ratelimited() (10 lines per 5 s)
	out=$("$BUSLOCK" -n 50) || fail "buslock failed: $out"
	pid=$(field pid "$out")
	calls=$(probe_calls handle_bus_lock)
	unprobe_functions handle_bus_lock register_die_notifier
	echo "register_die_notifier calls during amd_sld's load: $registered; kernel handle_bus_lock calls: $calls; amd_sld bus_locks: $(counter bus_locks)"
	expect_eq "register_die_notifier calls during amd_sld's load" "$registered" 0
	expect_eq "kernel handle_bus_lock calls for 50 bus locks" "$calls" 50
	dmesg | grep -qE "x86/split lock detection: #DB: buslock/$pid took a bus_lock trap at address: 0x[0-9a-f]+$" ||
		fail "no line of the kernel's own handler naming buslock/$pid: $(dmesg | tail -n 5)"
	expect_eq "bus_locks (amd_sld's PMU)" "$(counter bus_locks)" 50
	dmesg | grep -qE "amd_sld: PMU: buslock/$pid caused [0-9]+ bus locks$" || fail "no PMU warn line of amd_sld naming buslock/$pid"
	# amd_sld's trap line is the kernel's, prefix included: more than the kernel's own
	# pr_warn_ratelimited() lets through (10 per 5 s) would be amd_sld's.
	lines=$(dmesg | grep -cE "x86/split lock detection: #DB: buslock/$pid took a bus_lock trap")
	[ "$lines" -le 10 ] || fail "$lines trap lines for buslock/$pid: amd_sld logged trap lines too"
	dmesg | grep -q "amd_sld: #DB:" && fail "amd_sld logged a fatal trap line"
	unload
	for c in $(seq 0 $(($(nproc) - 1))); do
		eval "before=\$debugctl_$c"
		expect_eq "CPU $c DEBUGCTL after unload" "$(debugctl "$c")" "$before"
	done
}

refuses_without_trap_or_pmu() { # bare: stock TCG, neither
	expect_refusal "" "amd_sld: not loading: this AMD CPU has no Bus Lock Detect (CPUID 0x7 ECX\[24\] is clear) and the PMU cannot count"
}

# --- Unmodified workloads: the incident's wait loop, glibc's own, stress-ng --lockbus

# lockwait's own copy of the incident's loop: every exchange is a bus lock, counted exactly,
# logged against the program and the instruction after the xchg, in the wait function.
incident_case() { # source
	need_split_locks
	load "source=$1"
	out=$("$LOCKWAIT" -n 1000) || fail "lockwait failed: $out"
	echo "$out"
	pid=$(field pid "$out")
	fn=$(field fn "$out")
	expect_eq "exchanges made" "$(field xchgs "$out")" 1000
	expect_eq "futex waits refused (misaligned word), as in the incident" "$(field futex_einval "$out")" 1000
	expect_eq "bus_locks ($1)" "$(counter bus_locks)" 1000
	grep -q "^pid=$pid comm=lockwait bus_locks=" $SYS/top || fail "top does not name lockwait/$pid"
	if [ "$1" = bld ]; then
		line=$(dmesg | grep -E "x86/split lock detection: #DB: lockwait/$pid took a bus_lock trap at address: 0x[0-9a-f]+$" | head -n 1)
		[ -n "$line" ] || fail "no trap line naming lockwait/$pid"
		ip=$(echo "$line" | sed 's/.*address: //')
		echo "trap at $ip, wait loop at $fn"
		[ $((ip)) -gt $((fn)) ] && [ $((ip)) -lt $((fn + 256)) ] || fail "trap IP $ip is not in the wait loop at $fn"
		# Its traps at one IP share a record per CPU it ran on (until read): every record
		# shown is of its traps, and with none overwritten (each ring's records shown from
		# seq 0, without a gap), their counts add up to its 1000 bus locks.
		cat $SYS/events > /tmp/events
		sed 's/^/  /' /tmp/events
		shown=$(wc -l < /tmp/events)
		[ "$shown" -ge 1 ] || fail "no record shown"
		expect_eq "records of lockwait's traps" "$(grep -c " pid=$pid .*source=bld .* action=warn " /tmp/events)" "$shown"
		firsts=$(sed 's/^seq=\([0-9]*\) ms=[0-9]* cpu=\([0-9]*\) .*/\2 \1/' /tmp/events |
			awk '!($1 in first) { first[$1] = $2 } END { for (r in first) s += first[r]; print s + 0 }')
		if [ "$firsts" = 0 ] && [ -z "$(ring_seq_gaps /tmp/events)" ]; then
			expect_eq "bus locks of lockwait's records" "$(count_sum /tmp/events " pid=$pid ")" 1000
		else
			echo "records overwritten ($shown shown): the sum of their counts is a lower bound"
			[ "$(count_sum /tmp/events " pid=$pid ")" -le 1000 ] || fail "the records count more than 1000 bus locks"
		fi
		# Each record names the file of its IP, looked up by the task's own work or found in
		# its CPU's cache of the last lookup.
		expect_eq "trap records naming lockwait and the offset of their IP" \
			"$(grep -c " pid=$pid .*source=bld .* map=lockwait+0x[0-9a-f]*$" /tmp/events)" "$shown"
	else
		dmesg | grep -qE "amd_sld: PMU: lockwait/$pid caused [0-9]+ bus locks$" || fail "no PMU line naming lockwait/$pid"
		# Each sample's user IP: where the CPU was in user mode, or the one its entry into
		# the kernel saved (6.13+: the NMI lands in the kernel's own #DB handling of the bus
		# lock), never 0. Sampled, so it may have skidded past the loop (the futex call).
		ips=$(sed -n "s/.* pid=$pid .*source=pmu guest=0 ip=\(0x[0-9a-f]*\) .*/\1/p" $SYS/events)
		[ -n "$ips" ] || fail "no pmu event of lockwait/$pid"
		in_loop=0
		for ip in $ips; do
			[ $((ip)) -gt 0 ] && [ $((ip)) -lt $((0x800000000000)) ] || fail "sample IP $ip is not a user address"
			[ $((ip)) -gt $((fn)) ] && [ $((ip)) -lt $((fn + 256)) ] && in_loop=$((in_loop + 1))
		done
		echo "sample IPs: $(echo $ips | tr '\n' ' '); $in_loop of them in the wait loop at $fn"
		# The sampled task's work names the file of the latest sample's IP (merged samples
		# before it keep map=-).
		grep -qE " pid=$pid .*source=pmu .* map=lockwait\+0x[0-9a-f]+$" $SYS/events ||
			fail "no pmu event of lockwait/$pid names its file"
	fi
	unload
}

incident_reproducer_caught_by_the_trap() { incident_case bld; }
incident_reproducer_caught_by_the_pmu() { incident_case pmu; }

# glibc 2.36's own __lll_lock_wait_private, unmodified: one bus lock, then FUTEX_WAIT fails
# with EINVAL on the misaligned word and glibc aborts the process (__libc_fatal).
glibc_lll_lock_wait_private_named() {
	need_split_locks
	load
	# The kernel's own line is what names the instruction where it owns the trap: wait out
	# its pr_warn_ratelimited() window (10 lines per 5 s), which earlier cases may have used.
	! kernel_arms_the_trap || sleep 6
	"$LOCKWAIT" --glibc -t 1000 > /tmp/out 2>&1
	status=$?
	cat /tmp/out
	expect_eq "exit status (128 + SIGABRT from __libc_fatal)" "$status" 134
	grep -q "The futex facility returned an unexpected error code" /tmp/out || fail "glibc did not say why it aborted"
	out=$(head -n 1 /tmp/out)
	pid=$(field pid "$out")
	fn=$(field glibc_fn "$out")
	expect_eq "bus_locks" "$(counter bus_locks)" 1
	if [ "$(counter source)" != pmu ]; then # bld, or bld+pmu(guest) (auto)
		ip=$(dmesg | sed -n "s/.*x86\/split lock detection: #DB: lockwait\/$pid took a bus_lock trap at address: \(0x[0-9a-f]*\)$/\1/p")
		[ -n "$ip" ] || fail "no trap line naming lockwait/$pid"
		echo "trap at $ip; glibc's __lll_lock_wait_private at $fn"
	else
		# Where the kernel owns the trap (6.13+), its own handler names the process and
		# the instruction; amd_sld's PMU counts the one bus lock exactly but cannot sample
		# it: x86 perf programs a period of at least 2 (x86_perf_event_set_period()).
		ip=$(dmesg | sed -n "s/.*x86\/split lock detection: #DB: lockwait\/$pid took a bus_lock trap at address: \(0x[0-9a-f]*\)$/\1/p")
		[ -n "$ip" ] || fail "no line of the kernel's own handler naming lockwait/$pid"
		echo "the kernel's trap at $ip; glibc's __lll_lock_wait_private at $fn"
	fi
	[ $((ip)) -gt $((fn)) ] && [ $((ip)) -lt $((fn + 64)) ] || fail "IP $ip is not in __lll_lock_wait_private ($fn)"
	unload
}

# Issue 16, item 5, "which code": the record of glibc's own bus lock names the file of its IP
# and the offset into it (sysfs), and amd-sld names the function (the symbol table of that
# file, found through the live process). lockwait is static: the file is lockwait itself, the
# function glibc's __lll_lock_wait_private. --linger keeps the aborting process alive (its
# SIGABRT handler waits), so that the CLI finds its mapping; then it exits as abort() would.
glibc_lll_lock_wait_private_mapped() {
	need_split_locks
	need_cli
	kernel_arms_the_trap && skip "the kernel owns the trap here; perf cannot sample one bus lock"
	load source=bld
	"$LOCKWAIT" --glibc -t 1000 --linger 20000 > /tmp/out 2>&1 &
	lw=$!
	tries=0
	until grep -q "^aborted, lingering" /tmp/out; do
		tries=$((tries + 1))
		[ $tries -lt 200 ] || { kill $lw; fail "lockwait did not abort: $(cat /tmp/out)"; }
		sleep 0.1
	done
	cat /tmp/out
	out=$(head -n 1 /tmp/out)
	pid=$(field pid "$out")
	fn=$(field glibc_fn "$out")
	foff=$(field glibc_fn_offset "$out")
	line=$(grep " pid=$pid " $SYS/events)
	echo "record: $line"
	expect_eq "records of lockwait/$pid" "$(echo "$line" | grep -c .)" 1
	ip=$(echo "$line" | sed -n 's/.* ip=\(0x[0-9a-f]*\) .*/\1/p')
	off=$(echo "$line" | sed -n 's/.* map=lockwait+\(0x[0-9a-f]*\)$/\1/p')
	[ -n "$off" ] || fail "the record does not name lockwait: $line"
	echo "ip $ip, file offset $off; __lll_lock_wait_private at $fn, file offset $foff"
	[ $((off)) -gt $((foff)) ] && [ $((off)) -lt $((foff + 64)) ] ||
		fail "file offset $off is not in __lll_lock_wait_private (file offset $foff)"
	expect_eq "ip and file offset differ by the mapping's base, as the function's do" \
		"$((ip - off))" "$((fn - foff))"
	amd-sld events > /tmp/cli
	cat /tmp/cli
	grep -E "lockwait \(pid $pid, tid $pid, cgroup [^)]*\): 1 bus lock \(bld\), ip $ip in lockwait __lll_lock_wait_private\+0x[0-9a-f]+, warned$" /tmp/cli ||
		fail "amd-sld events does not name lockwait's __lll_lock_wait_private"
	sym_off=$(sed -n "s/.*(pid $pid, .* __lll_lock_wait_private+\(0x[0-9a-f]*\), warned$/\1/p" /tmp/cli)
	expect_eq "symbol offset = ip - function" "$((sym_off))" "$((ip - fn))"
	kill -TERM $lw
	wait $lw
	status=$?
	expect_eq "exit status (128 + SIGABRT, as abort() would)" "$status" 134
	# Once the process is gone, the file and the offset are what is left.
	amd-sld events | grep -F "ip $ip in lockwait+$off, warned" ||
		fail "amd-sld events does not fall back to the file and offset: $(amd-sld events)"
	unload
}

# stress-ng's own lockbus stressor, from Debian's package: the same bogo operations make the
# same bus locks, so the two sources must count the same; with --lockbus-nosplit, none.
# Where the kernel owns the trap (6.13+), the trap's count is its handle_bus_lock() calls,
# made beside amd_sld's PMU source during the same runs.
stress_ng_lockbus_counted_by_both_sources() {
	need_split_locks
	command -v stress-ng > /dev/null || fail "stress-ng is not in the VM (scripts/vmtest copies it)"
	kernel_arms_the_trap && probe_functions handle_bus_lock
	for source in $(sources_here); do
		load "source=$source"
		stress-ng --lockbus 1 --lockbus-ops 200 --quiet > /tmp/sng.out 2>&1 || fail "stress-ng failed: $(cat /tmp/sng.out)"
		eval "count_$source=$(counter bus_locks)"
		kernel_arms_the_trap && count_bld=$(probe_calls handle_bus_lock)
		grep -q "comm=stress-ng" $SYS/top || fail "top does not name stress-ng ($source)"
		stress-ng --lockbus 1 --lockbus-ops 200 --lockbus-nosplit --quiet > /tmp/sng.out 2>&1 ||
			fail "stress-ng --lockbus-nosplit failed: $(cat /tmp/sng.out)"
		eval "nosplit_$source=\$((\$(counter bus_locks) - \$count_$source))"
		kernel_arms_the_trap && nosplit_bld=$(($(probe_calls handle_bus_lock) - count_bld))
		unload
	done
	kernel_arms_the_trap && unprobe_functions handle_bus_lock
	echo "stress-ng --lockbus-ops 200: trap $count_bld, PMU $count_pmu; --lockbus-nosplit: trap $nosplit_bld, PMU $nosplit_pmu"
	[ "$count_bld" -gt 0 ] || fail "the trap saw no bus lock of stress-ng"
	expect_eq "the PMU's count against the trap's" "$count_pmu" "$count_bld"
	expect_eq "bus locks of --lockbus-nosplit (trap)" "$nosplit_bld" 0
	expect_eq "bus locks of --lockbus-nosplit (PMU)" "$nosplit_pmu" 0
}

aligned_operands_count_nothing() {
	for source in $(sources_here); do
		load "source=$source"
		"$BUSLOCK" -a -n 2000 > /dev/null || fail "buslock -a failed"
		"$LOCKWAIT" -a -n 2000 > /dev/null || fail "lockwait -a failed"
		expect_eq "bus_locks of aligned locked operations ($source)" "$(counter bus_locks)" 0
		expect_eq "events ($source)" "$(cat $SYS/events)" ""
		unload
		dmesg | grep -qE "amd_sld: (#DB|PMU): " && fail "a line was logged for aligned operations ($source)"
	done
	return 0
}

# Issue 13, item 3: with source=pmu amd_sld has armed no trap, so a bus-lock #DB belongs to
# whoever armed DEBUGCTL[2] (here: the test, standing for a 6.13+ kernel that arms it): the
# kernel's handle_bus_lock() must see each one, and bus_locks must count the PMU's only.
kernel_trap_left_alone_with_the_pmu_source() {
	probe_functions handle_bus_lock
	load source=pmu
	for c in $(seq 0 $(($(nproc) - 1))); do
		"$MSR" "$c" 0x1d9 $(($(debugctl "$c") | 4)) || fail "cannot set DEBUGCTL[2] on CPU $c"
	done
	"$BUSLOCK" -n 50 > /dev/null
	status=$?
	for c in $(seq 0 $(($(nproc) - 1))); do
		"$MSR" "$c" 0x1d9 $(($(debugctl "$c") & ~4)) || fail "cannot clear DEBUGCTL[2] on CPU $c"
	done
	calls=$(probe_calls handle_bus_lock)
	unprobe_functions handle_bus_lock
	[ $status -eq 0 ] || fail "buslock failed"
	echo "kernel handle_bus_lock calls: $calls; amd_sld bus_locks: $(counter bus_locks)"
	expect_eq "kernel handle_bus_lock calls for 50 traps amd_sld did not arm" "$calls" 50
	expect_eq "bus_locks (the PMU's only)" "$(counter bus_locks)" 50
	unload
}

# Function-call IPIs but TLB shootdowns (which x86 counts in CAL too: the reader's
# processes come and go), all CPUs, from /proc/interrupts.
call_ipis() {
	awk '$1 == "CAL:" || $1 == "TLB:" {
		s = 0; for (i = 2; i <= NF; i++) if ($i ~ /^[0-9]+$/) s += $i
		if ($1 == "CAL:") cal = s; else tlb = s
	} END { print cal - tlb }' /proc/interrupts
}

# Issue 13, item 7: reading the world-readable bus_locks must not let any user make every
# CPU take an IPI per read (docs/ABI: unprivileged readers see a value up to 1 s old).
unprivileged_readers_send_no_ipis() {
	load source=pmu
	"$BUSLOCK" -n 10 > /dev/null || fail "buslock failed"
	# The control: the same 200 processes reading a plain counter. Processes coming and
	# going make IPIs of their own.
	before=$(call_ipis)
	as_nobody "i=0; while [ \$i -lt 200 ]; do cat $SYS/warned > /dev/null || exit 1; i=\$((i + 1)); done" ||
		fail "an unprivileged reader cannot read warned"
	control=$(($(call_ipis) - before))
	before=$(call_ipis)
	as_nobody "i=0; while [ \$i -lt 200 ]; do cat $SYS/bus_locks > /dev/null || exit 1; i=\$((i + 1)); done" ||
		fail "an unprivileged reader cannot read bus_locks"
	ipis=$(($(call_ipis) - before))
	echo "function-call IPIs during 200 unprivileged reads: bus_locks $ipis, warned (control) $control"
	[ $((ipis - control)) -lt 100 ] || fail "unprivileged reads of bus_locks made $((ipis - control)) IPIs more than the control"
	expect_eq "bus_locks (root: exact)" "$(counter bus_locks)" 10
	sleep 2
	expect_eq "bus_locks (unprivileged, after the staleness bound)" "$(as_nobody cat $SYS/bus_locks)" 10
	unload
}

# Issue 13, item 2: readers of bus_locks while the PMU counters are released at unload.
counter_readers_during_unload() {
	for r in 1 2 3; do
		(while :; do cat $SYS/bus_locks > /dev/null 2>&1; done) &
		readers="$readers $!"
	done
	n=0
	while [ $n -lt 20 ]; do
		insmod "$KO" source=pmu || { kill $readers; fail "insmod failed"; }
		"$BUSLOCK" -n 5 > /dev/null
		rmmod amd_sld || { kill $readers; fail "rmmod failed"; }
		n=$((n + 1))
	done
	kill $readers
	wait 2> /dev/null
	dmesg | grep -E "BUG:|Oops|KASAN|general protection" && fail "the kernel reported a fault"
	return 0
}

# Issue 13, item 12: without the module parameter the policy starts from the kernel's
# split_lock_detect= boot option (scripts/vmtest --env "split_lock_detect=fatal"), or warn;
# the module parameter overrides it.
boot_option_is_the_default() {
	boot=$(tr ' ' '\n' < /proc/cmdline | sed -n 's/^split_lock_detect=//p' | tail -n 1)
	echo "split_lock_detect= on the kernel command line: '${boot}'"
	load
	expect_eq "policy without the module parameter" "$(cat $PARAM)" "${boot:-warn}"
	if [ -n "$boot" ]; then
		dmesg | grep -q "amd_sld: split_lock_detect=$boot from the kernel command line" ||
			fail "the load does not say the policy came from the command line"
	fi
	unload
	load split_lock_detect=ratelimit:7
	expect_eq "policy with the module parameter" "$(cat $PARAM)" ratelimit:7
	unload
}

# --- KVM on a stock kernel before 6.12.19 (Debian's 5.10.262 and 6.1.192): SVM runs guests
# with the host's DEBUGCTL there, so an armed Bus Lock Detect would fire inside guests. The
# VM for stock kernels carries kvm_amd and its dependencies for modprobe (scripts/vmtest).

kvm_amd_insmod() { # loads kvm_amd and what it needs; modprobe's error on stderr
	modprobe kvm_amd
}

kvm_amd_rmmod() {
	[ ! -e /sys/module/kvm_amd ] || modprobe -r kvm_amd || fail "modprobe -r kvm_amd failed"
}

# Whether the running kernel is older than 6.12.19, where KVM keeps DEBUGCTL to itself.
kernel_before_6_12_19() {
	uname -r | awk -F'[.-]' '{ exit !($1 < 6 || ($1 == 6 && ($2 < 12 || ($2 == 12 && $3 < 19)))) }'
}

kvm_rule_on_unsafe_kernel() { # zen5 (trap and PMU), stock kernel before 6.12.19
	kernel_before_6_12_19 || skip "$(uname -r): KVM keeps the host's DEBUGCTL out of guests here"
	[ -n "$(find /lib/modules -name "kvm[-_]amd.ko*" 2> /dev/null)" ] || skip "no kvm_amd module to load"
	kvm_amd_rmmod
	[ ! -e /sys/module/kvm_amd ] || skip "kvm_amd is built in"
	SRC=/sys/module/amd_sld/parameters/source
	kvm_why="kvm_amd is loaded and this kernel.s KVM runs guests with the host.s DEBUGCTL"

	# 1. source=bld: kvm_amd's load fails with EBUSY, one line saying why and what to do.
	load source=bld
	expect_eq "source with bld" "$(counter source)" bld
	dmesg -c > /dev/null
	if kvm_amd_insmod 2> /tmp/kvm.err; then
		kvm_amd_rmmod
		fail "kvm_amd loaded while source=bld armed the trap"
	fi
	grep -q "Device or resource busy" /tmp/kvm.err || fail "insmod kvm-amd error is not EBUSY: $(cat /tmp/kvm.err)"
	# One line per attempt (busybox's insmod tries init_module after finit_module fails).
	dmesg | grep -q 'amd_sld: kvm_amd refused: source=bld arms Bus Lock Detect' || fail "no line saying why kvm_amd is refused"
	dmesg | grep 'amd_sld: kvm_amd refused' | grep -q 'echo pmu > /sys/module/amd_sld/parameters/source' ||
		fail "the refusal does not name the fix"
	[ ! -e /sys/module/kvm_amd ] || fail "kvm_amd present after the refusal"
	expect_eq "source after the refusal" "$(counter source)" bld
	expect_eq "armed_cpus after the refusal" "$(counter armed_cpus)" "$(online_cpus)"
	# The fix the line names: with the PMU, kvm_amd loads; then the trap is refused.
	echo pmu > $SRC || fail "switching to pmu failed"
	dmesg -c > /dev/null
	kvm_amd_insmod 2> /tmp/kvm.err || fail "kvm_amd does not load with source=pmu: $(cat /tmp/kvm.err)"
	dmesg | grep -q 'amd_sld: kvm_amd refused' && fail "kvm_amd refused with source=pmu"
	echo bld > $SRC 2> /dev/null && fail "source=bld accepted while kvm_amd is loaded"
	dmesg | grep -q "amd_sld: source=bld: $kvm_why" || fail "no line saying why bld is refused"
	expect_eq "source after the refused switch" "$(counter source)" pmu
	unload

	# 2. Loading amd_sld with kvm_amd there: auto takes the PMU and says why; bld refused.
	load
	expect_eq "auto with kvm_amd loaded" "$(counter source)" pmu
	expect_eq "lines saying why" "$(dmesg | grep -c "amd_sld: source=auto: pmu, not Bus Lock Detect: $kvm_why")" 1
	for c in $(seq 0 $(($(nproc) - 1))); do
		expect_eq "CPU $c DEBUGCTL with kvm_amd loaded" "$(debugctl "$c")" 0
	done
	unload
	expect_refusal source=bld "amd_sld: not loading: $kvm_why" "Device or resource busy"

	# 3. auto with the trap armed: loading kvm_amd switches to the PMU first, in one line.
	kvm_amd_rmmod
	load
	expect_eq "auto without kvm_amd" "$(counter source)" "bld+pmu(guest)"
	dmesg -c > /dev/null
	kvm_amd_insmod 2> /tmp/kvm.err || fail "kvm_amd does not load with source=auto: $(cat /tmp/kvm.err)"
	expect_eq "source once kvm_amd came" "$(counter source)" pmu
	expect_eq "parameter once kvm_amd came" "$(cat $SRC)" auto
	expect_eq "amd_sld lines" "$(dmesg | grep -c 'amd_sld: ')" 1
	dmesg | grep -q "amd_sld: source: bld+pmu(guest) -> pmu (source=auto): $kvm_why" || fail "no line saying why the source changed"
	for c in $(seq 0 $(($(nproc) - 1))); do
		expect_eq "CPU $c DEBUGCTL once kvm_amd came" "$(debugctl "$c")" 0
	done
	expect_eq "armed_cpus (PMU)" "$(counter armed_cpus)" "$(online_cpus)"
	unload
	kvm_amd_rmmod
}

# Issue 15: KVM's mediated vPMU (7.0+, kvm_amd enable_mediated_pmu=1, which needs PerfMonV2:
# machine zen5-perfmonv2). While perf events that count guest mode exist, KVM refuses vCPUs
# with a mediated vPMU (perf_create_mediated_pmu(): EBUSY); while such vCPUs exist, perf
# refuses events that count guest mode (mediated_pmu_account_event(): EOPNOTSUPP). amd_sld's
# existing counters are never touched; new ones count host mode only, exactly, which it
# says once in the log and in guest_uncounted_cpus. kvmvm creates the vCPU a VMM would.
mediated_vpmu_and_the_pmu_source() { # zen5-perfmonv2, mainline
	kernel_at_least 7 0 || skip "$(uname -r) has no mediated vPMU (7.0+)"
	[ -n "$(find /lib/modules -name "kvm[-_]amd.ko*" 2> /dev/null)" ] || skip "no kvm_amd module to load"
	kvm_amd_rmmod
	[ ! -e /sys/module/kvm_amd ] || skip "kvm_amd is built in"
	modprobe kvm_amd enable_mediated_pmu=1 || fail "modprobe kvm_amd enable_mediated_pmu=1 failed"
	mediated=$(cat /sys/module/kvm_amd/parameters/enable_mediated_pmu)
	echo "kvm_amd.enable_mediated_pmu=$mediated; CPUID 0x80000022: $("$CPUID" 0x80000022 2>&1)"
	if [ "$mediated" != Y ]; then
		kvm_amd_rmmod
		skip "KVM turned the mediated vPMU off: no PerfMonV2 on this CPU (machine zen5-perfmonv2 has it)"
	fi
	# The NMI watchdog's perf events count guest mode too, and would refuse every mediated
	# vPMU (KVM's own line says to disable it).
	watchdog=$(cat /proc/sys/kernel/nmi_watchdog 2> /dev/null)
	[ -z "$watchdog" ] || echo 0 > /proc/sys/kernel/nmi_watchdog
	# 1. Without amd_sld: a mediated vPMU.
	out=$("$KVMVM") || fail "no mediated-vPMU vCPU even without amd_sld: $out"
	# 2. amd_sld's counters count guest mode: KVM refuses the vCPU, and says so itself.
	load source=pmu
	expect_eq "guest_uncounted_cpus, counters of guest mode" "$(counter guest_uncounted_cpus)" ""
	dmesg -c > /dev/null
	out=$("$KVMVM")
	status=$?
	echo "a mediated-vPMU vCPU beside amd_sld's counters: $out"
	expect_eq "kvmvm exit status (vCPU refused)" $status 1
	expect_eq "kvmvm's error" "$out" "vcpu_errno=16 (Device or resource busy)"
	dmesg | grep -q "kvm: Failed to enable mediated vPMU" || fail "no line of KVM's: $(dmesg | tail -n 3)"
	expect_eq "armed_cpus (counters untouched)" "$(counter armed_cpus)" "$(online_cpus)"
	unload
	# 3. A mediated-vPMU VM exists: amd_sld counts host mode only, exactly, and says so.
	"$KVMVM" -h > /tmp/vmm.out &
	vmm=$!
	n=0
	while ! grep -q . /tmp/vmm.out && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
	expect_eq "the VMM's vCPU" "$(cat /tmp/vmm.out)" "vcpu=ok"
	dmesg -c > /dev/null
	load source=pmu
	expect_eq "armed_cpus with a mediated vPMU" "$(counter armed_cpus)" "$(online_cpus)"
	expect_eq "guest_uncounted_cpus with a mediated vPMU" "$(counter guest_uncounted_cpus)" "$(online_cpus)"
	dmesg | grep amd_sld
	expect_eq "lines saying so" "$(dmesg | grep -c 'amd_sld: CPU [0-9]*: perf refuses counters of guest mode (EOPNOTSUPP: VMs with a mediated vPMU exist): counting host mode only')" 1
	"$BUSLOCK" -n 100 > /dev/null || fail "buslock failed"
	expect_eq "bus_locks (host mode, exact)" "$(counter bus_locks)" 100
	expect_eq "uncounted_cpus" "$(counter uncounted_cpus)" ""
	if [ -e /sys/devices/system/cpu/cpu2/online ]; then
		echo 0 > /sys/devices/system/cpu/cpu2/online && echo 1 > /sys/devices/system/cpu/cpu2/online ||
			fail "CPU 2 hotplug failed"
		expect_eq "armed_cpus after CPU 2 came back" "$(counter armed_cpus)" "$(online_cpus)"
	fi
	# 4. The VM gone, counters started anew count guest mode again: a mediated vPMU is
	#    refused again. guest_uncounted_cpus keeps the CPUs since the load.
	kill $vmm
	wait $vmm 2> /dev/null
	set_policy off
	set_policy warn
	out=$("$KVMVM")
	expect_eq "a mediated-vPMU vCPU once amd_sld re-armed" "$out" "vcpu_errno=16 (Device or resource busy)"
	expect_eq "guest_uncounted_cpus (since load)" "$(counter guest_uncounted_cpus)" "$(online_cpus)"
	"$BUSLOCK" -n 10 > /dev/null || fail "buslock failed"
	expect_eq "bus_locks" "$(counter bus_locks)" 110
	unload
	[ -z "$watchdog" ] || echo "$watchdog" > /proc/sys/kernel/nmi_watchdog
	kvm_amd_rmmod
}

# --- The emulated CPU under the running kernel, with no module: what every other case
# stands on (scripts/vmtest --kernel bullseye|bookworm|trixie proves its harness with it)

kernel_at_least() { # major minor: whether uname -r is that version or later
	uname -r | awk -F'[.-]' -v M="$1" -v m="$2" '{ exit !($1 > M || ($1 == M && $2 >= m)) }'
}

cpuid_bit() { # leaf register bit
	value=$(field "$2" "$("$CPUID" "$1")") || fail "cpuid $1 failed"
	echo $(((value >> $3) & 1))
}

has_cpu_flag() { # flag: named in /proc/cpuinfo
	grep -m 1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -qx "$1"
}

kernel_boots_with_emulated_cpu() {
	echo "AMD_SLD_KERNEL=${AMD_SLD_KERNEL:-test}, machine ${AMD_SLD_MACHINE:-zen5}: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
	[ -z "$AMD_SLD_EXPECT_CPUS" ] || expect_eq "online CPUs" "$(nproc)" "$AMD_SLD_EXPECT_CPUS"
	case ${AMD_SLD_MACHINE:-zen5} in # what scripts/lib.sh qemu_cpu gives each machine
	zen5 | zen5-debugctl-ignored | zen5-perfmonv2) bld=1 pmu=1 ;;
	zen4) bld=0 pmu=1 ;;
	zen5-nopmu) bld=1 pmu=0 ;;
	*) bld=0 pmu=0 ;;
	esac
	expect_eq "CPUID 0x7 ECX[24] (Bus Lock Detect)" "$(cpuid_bit 7 ecx 24)" $bld
	expect_eq "CPUID 0x80000001 ECX[23] (PerfCtrExtCore)" "$(cpuid_bit 0x80000001 ecx 23)" $pmu
	# Linux names the Bus Lock Detect flag since 5.13 (its Intel support); 5.10 does not.
	if kernel_at_least 5 13; then
		has_cpu_flag bus_lock_detect && named=1 || named=0
		expect_eq "bus_lock_detect in /proc/cpuinfo" $named $bld
	else
		echo "bus_lock_detect: not a flag $(uname -r) names (5.13+); CPUID says $bld"
	fi
	has_cpu_flag perfctr_core && named=1 || named=0
	expect_eq "perfctr_core in /proc/cpuinfo" $named $pmu
	# PerfMonV2 (scripts/qemu 0004) only where the machine offers it; Linux names it 5.19 on.
	v2=0
	[ "${AMD_SLD_MACHINE:-zen5}" = zen5-perfmonv2 ] && v2=1
	[ $v2 = 0 ] || expect_eq "CPUID 0x80000022 EAX[0] (PerfMonV2)" "$(cpuid_bit 0x80000022 eax 0)" 1
	if kernel_at_least 5 19; then
		has_cpu_flag perfmon_v2 && named=1 || named=0
		expect_eq "perfmon_v2 in /proc/cpuinfo" $named $v2
	fi
	# DEBUGCTL through the kernel's MSR driver, on every CPU: 0, but where the kernel arms
	# Bus Lock Detect itself (6.13+: sid) on a CPU that has it.
	armed=0
	[ $bld = 1 ] && [ "${AMD_SLD_MACHINE:-zen5}" != zen5-debugctl-ignored ] && kernel_at_least 6 13 && armed=4
	for c in $(seq 0 $(($(nproc) - 1))); do
		expect_eq "CPU $c DEBUGCTL (the kernel's own)" "$(debugctl "$c")" $armed
	done
	# Debian's stress-ng, unmodified: its split locks must run to the end.
	stress-ng --lockbus 1 --lockbus-ops 200 --quiet > /tmp/sng.out 2>&1 || fail "stress-ng --lockbus failed: $(cat /tmp/sng.out)"
	# ... and trap where the CPU has Bus Lock Detect: the kernel's own handler (5.13+) sees
	# each bus lock once the trap is armed. 6.1 and 6.12 (the test kernel too) never arm it
	# on AMD, but they do take it: they start in warn ('x86/split lock detection: #DB:
	# warning on user-space bus_locks' at boot) and log '... took a bus_lock trap'.
	# 5.10 has no handler: an armed trap's #DB passes silently there (no signal, no line).
	if [ "${AMD_SLD_MACHINE:-zen5}" = zen5-debugctl-ignored ]; then
		"$MSR" 1 0x1d9 4 || fail "cannot write DEBUGCTL on CPU 1"
		expect_eq "CPU 1 DEBUGCTL after writing bit 2 (the machine ignores it)" "$(debugctl 1)" 0
		echo "stress-ng --lockbus ran; DEBUGCTL ignores writes here: no trap to count it with"
		return 0
	fi
	if [ $bld = 0 ]; then
		echo "stress-ng --lockbus ran; no Bus Lock Detect to count it with here"
		return 0
	fi
	if ! kernel_has_function handle_bus_lock; then
		echo "stress-ng --lockbus ran; $(uname -r) has no bus-lock #DB handler (handle_bus_lock, 5.13+) to count it with"
		return 0
	fi
	probe_functions handle_bus_lock
	for c in $(seq 0 $(($(nproc) - 1))); do
		"$MSR" "$c" 0x1d9 $(($(debugctl "$c") | 4)) || fail "cannot set DEBUGCTL[2] on CPU $c"
	done
	stress-ng --lockbus 1 --lockbus-ops 200 --quiet > /tmp/sng.out 2>&1
	status=$?
	split=$(probe_calls handle_bus_lock)
	stress-ng --lockbus 1 --lockbus-ops 200 --lockbus-nosplit --quiet >> /tmp/sng.out 2>&1 || status=$?
	nosplit=$(($(probe_calls handle_bus_lock) - split))
	for c in $(seq 0 $(($(nproc) - 1))); do
		"$MSR" "$c" 0x1d9 $(($(debugctl "$c") & ~4 | armed)) || fail "cannot restore DEBUGCTL on CPU $c"
	done
	unprobe_functions handle_bus_lock
	[ $status -eq 0 ] || fail "stress-ng --lockbus failed with the trap armed: $(cat /tmp/sng.out)"
	echo "kernel handle_bus_lock calls: stress-ng --lockbus-ops 200: $split; --lockbus-nosplit: $nosplit"
	[ "${split:-0}" -gt 0 ] || fail "the armed trap saw no bus lock of stress-ng --lockbus"
	expect_eq "bus-lock traps of --lockbus-nosplit" "$nosplit" 0
}

# KVM for AMD loads on the emulated CPU where it has SVM (scripts/lib.sh qemu_cpu): what a
# case running a KVM guest (the PMU source's guest mode) needs first.
kvm_amd_loads_on_emulated_svm() {
	expect_eq "CPUID 0x80000001 ECX[2] (SVM)" "$(cpuid_bit 0x80000001 ecx 2)" 1
	has_cpu_flag svm || fail "no svm in /proc/cpuinfo"
	echo "CPUID 0x8000000a: $("$CPUID" 0x8000000a)"
	if [ ! -e /sys/module/kvm_amd ]; then
		modprobe kvm_amd > /tmp/modprobe.out 2>&1 || fail "modprobe kvm_amd failed: $(cat /tmp/modprobe.out); $(dmesg | grep -i -e kvm -e svm | tail -n 5)"
	fi
	dmesg | grep -i -e kvm -e svm -e ccp | sed 's/^/dmesg: /'
	[ -e /sys/module/kvm_amd ] || fail "kvm_amd is not loaded"
	[ -c /dev/kvm ] || fail "no /dev/kvm"
	for p in npt nested; do
		[ -e /sys/module/kvm_amd/parameters/$p ] && echo "kvm_amd.$p=$(cat /sys/module/kvm_amd/parameters/$p)"
	done
	rmmod kvm_amd && rmmod kvm || fail "cannot unload kvm_amd and kvm"
}

# --- A real KVM guest (issue 16): guestlock's guest loops on a split-locked xchg in guest
# user mode (CPL 3) under kvm_amd on the emulated SVM; amd_sld on this (L1) host sees it.
# The source these cases run: auto, what an operator gets (on Zen 5 the trap for the host
# and guest-only PMU counters where KVM keeps DEBUGCTL to itself: 6.12.19+; the PMU where
# the KVM rule or the kernel's own trap says so).
GUEST_SOURCE=${AMD_SLD_GUEST_SOURCE:-auto}

need_kvm_guest() {
	if [ ! -e /sys/module/kvm_amd ]; then
		[ -n "$(find /lib/modules -name "kvm[-_]amd.ko*" 2> /dev/null)" ] || skip "no kvm_amd here (the test kernel has no KVM: --kernel trixie)"
		modprobe kvm_amd > /tmp/modprobe.out 2>&1 || fail "modprobe kvm_amd failed: $(cat /tmp/modprobe.out)"
		touch /tmp/kvm_amd.loaded-by-case
	fi
	[ -c /dev/kvm ] || fail "no /dev/kvm"
}

# guestlock's own report: iterations (the guest's split locks), elapsed_ms, pid.
guest_run() { # guestlock arguments...
	"$GUESTLOCK" "$@" > /tmp/guest.out 2>&1
	status=$?
	cat /tmp/guest.out
	return $status
}

# (a) and (b): bus_locks counts every bus lock of the guest exactly (the pinned tally counts
# guest mode); guest_bus_locks sums the samples that found the vCPU thread in guest mode
# (PF_VCPU), so it is a sampling estimate: what the CPU counted after its last sample is
# charged to no one. The samples name the VMM's vCPU thread (its main thread), guest=1.
guest_run_on_cpu() { # cpu guestlock arguments...
	cpu=$1
	shift
	taskset -c "$cpu" "$GUESTLOCK" "$@" > /tmp/guest.out 2>&1
	status=$?
	cat /tmp/guest.out
	return $status
}

guest_bus_locks_counted_and_named() {
	need_kvm_guest
	load source=$GUEST_SOURCE
	guest_run -n 20000 -p 1000 || fail "guestlock failed (status $status)"
	out=$(tail -n 1 /tmp/guest.out)
	pid=$(field pid "$out")
	expect_eq "the guest's iterations" "$(field iterations "$out")" 20000
	expect_eq "bus_locks (exact)" "$(counter bus_locks)" 20000
	expect_eq "uncounted_cpus" "$(counter uncounted_cpus)" ""
	guest=$(counter guest_bus_locks)
	sed 's/^/  /' $SYS/events
	sed 's/^/  /' $SYS/top
	echo "guest_bus_locks=$guest of 20000"
	[ "$guest" -le 20000 ] || fail "guest_bus_locks over-counts: $guest of 20000"
	# Measured: 36% to 93%, the least after the suite's storms, once perf has lowered
	# perf_event_max_sample_rate for overflow handlers that took too long under TCG.
	[ "$guest" -gt 0 ] || fail "no guest bus lock sampled"
	expect_eq "event lines in the documented format" "$(grep -cvE "$EVENT_RE" $SYS/events)" 0
	expect_eq "events not of the vCPU thread in guest mode" \
		"$(grep -cvE " pid=$pid tid=$pid comm=guestlock source=pmu guest=1 ip=0x0 count=[0-9]+ action=warn cgroup=[0-9]+ map=[!-~]+\$" $SYS/events)" 0
	if [ "$(counter source)" = "bld+pmu(guest)" ]; then
		# Both at once: guest_bus_locks is the guest-only tally, exact; top sums samples.
		expect_eq "guest_bus_locks (the guest-only tally, exact)" "$guest" 20000
		top_locks=$(sed -n "s/^pid=$pid comm=guestlock bus_locks=\([0-9]*\).*/\1/p" $SYS/top)
		[ -n "$top_locks" ] && [ "$top_locks" -gt 0 ] && [ "$top_locks" -le 20000 ] ||
			fail "top does not charge guestlock/$pid with its sampled bus locks: '$top_locks'"
	else
		grep -qE "^pid=$pid comm=guestlock bus_locks=$guest( |\$)" $SYS/top || fail "top does not charge $guest bus locks to guestlock/$pid"
	fi
	unload
}

# Issue 16's promise for auto on Zen 5: a guest's and a host task's bus locks in the same
# run, each counted once: the host's by the trap (each one, exact), the guest's by the
# guest-only counters (exact total), and nothing by both.
guest_and_host_counted_once_under_auto() {
	need_kvm_guest
	load
	[ "$(counter source)" = "bld+pmu(guest)" ] || skip "auto is $(counter source) here, not the trap with guest-only counters"
	guest_run -n 20000 -p 1000 &
	guest_pid=$!
	out=$("$BUSLOCK" -n 3000) || fail "buslock failed: $out"
	wait $guest_pid || fail "guestlock failed"
	expect_eq "the guest's iterations" "$(field iterations "$(tail -n 1 /tmp/guest.out)")" 20000
	expect_eq "bus_locks: 3000 host + 20000 guest, each once" "$(counter bus_locks)" 23000
	expect_eq "guest_bus_locks (the guest-only tally)" "$(counter guest_bus_locks)" 20000
	expect_eq "host bus locks seen by the trap (source=bld events of buslock)" \
		"$(grep -c ' comm=buslock source=bld guest=0 ' $SYS/events)" "$(grep -c ' comm=buslock ' $SYS/events)"
	grep -q ' comm=guestlock source=pmu guest=1 ' $SYS/events || fail "no guest record of guestlock"
	unload
}

# (c) warn: the PMU line, in guest mode, naming the VMM.
guest_warn_line() {
	need_kvm_guest
	load source=$GUEST_SOURCE split_lock_detect=warn
	guest_run -n 5000 -p 500 || fail "guestlock failed (status $status)"
	pid=$(field pid "$(tail -n 1 /tmp/guest.out)")
	dmesg | grep 'amd_sld: PMU:' | sed 's/^/dmesg: /'
	dmesg | grep -qE "amd_sld: PMU: guestlock/$pid caused [0-9]+ bus locks in guest mode \(guest of VMM pid $pid, vCPU thread $pid\)\$" ||
		fail "no PMU guest-mode line for guestlock/$pid"
	expect_eq "PMU lines not of guestlock/$pid in guest mode" \
		"$(dmesg | grep 'amd_sld: PMU:' | grep -cvE "amd_sld: PMU: guestlock/$pid caused [0-9]+ bus locks in guest mode \(guest of VMM pid $pid, vCPU thread $pid\)\$")" 0
	[ "$(counter warned)" -ge 1 ] || fail "warned did not count"
	unload
}

# (d) ratelimit:N throttles the vCPU thread before it re-enters the guest: the guest's own
# progress (its iterations, reported with port I/O) from 1 s on, when the unpaced first
# sample is behind it. The vCPU thread is pinned, as VMMs pin vCPUs: a sample charges the
# bus locks its CPU counted since that CPU's previous sample, so a thread that moves to
# another CPU after each sleep leaves the bus locks since the old CPU's last sample to be
# charged later, to whoever that CPU samples next (measured unpinned: 0.99 to 1.13 of N).
guest_ratelimit_case() { # rate iterations-per-report
	need_kvm_guest
	load source=$GUEST_SOURCE "split_lock_detect=ratelimit:$1"
	guest_run_on_cpu 1 -n 0 -t 8000 -w 1000 -p "$2" || fail "guestlock failed (status $status)"
	out=$(tail -n 1 /tmp/guest.out)
	n=$(field window_iterations "$out")
	ms=$(field window_ms "$out")
	[ -n "$n" ] && [ "${ms:-0}" -gt 0 ] || fail "no window in guestlock's report"
	rate_x1000=$((n * 1000000 / ms / $1))
	echo "ratelimit:$1: the guest made $n split locks in $ms ms: achieved/N = $((rate_x1000 / 1000)).$(printf %03d $((rate_x1000 % 1000)))"
	expect_eq "bus_locks = the guest's iterations" "$(counter bus_locks)" "$(field iterations "$out")"
	[ "$(counter throttled)" -gt 0 ] || fail "no sample was throttled"
	# Bus locks happen before their sample books them: over any window the guest may be one
	# sample ahead of N per second (docs/design.md, "ratelimit:N on samples"), and no more.
	sample=$(sed -n 's/.* count=\([0-9]*\) .*/\1/p' $SYS/events | sort -n | tail -n 1)
	allowed=$(($1 * ms / 1000 + sample))
	echo "allowed: N x window + the largest sample ($sample) = $allowed"
	[ "$rate_x1000" -ge 900 ] || fail "achieved/N is below 0.9"
	[ "$n" -le "$allowed" ] || fail "the guest made $n split locks, more than $allowed"
}

# A report (an I/O exit to the VMM) after every bus lock: the sleep runs on the vCPU thread's
# return to user mode.
guest_ratelimit_10() {
	guest_ratelimit_case 10 1
	unload
}

# A report every 100 bus locks (one a second), samples standing for 10 to 40 here: the
# sleeps run in KVM_RUN, between the sample's NMI exit and the next VMRUN
# (xfer_to_guest_mode_handle_work()); no KVM_RUN returns for them (intr_exits=0).
guest_ratelimit_100() {
	guest_ratelimit_case 100 100
	out=$(tail -n 1 /tmp/guest.out)
	expect_eq "KVM_RUN returns with EINTR" "$(field intr_exits "$out")" 0
	# Works that waited for an exit to the VMM would merge into one per exit.
	echo "throttled=$(counter throttled) for $(field io_exits "$out") exits to the VMM"
	[ "$(counter throttled)" -gt "$(field io_exits "$out")" ] ||
		fail "no more sleeps than exits to the VMM: none ran inside KVM_RUN"
	unload
}

# (e) fatal: SIGBUS to the vCPU thread, which it can neither block nor ignore: the VMM dies.
guest_fatal_kills_the_vmm() {
	need_kvm_guest
	load source=$GUEST_SOURCE split_lock_detect=fatal
	guest_run -n 0 -t 10000 -p 100
	expect_eq "the VMM's exit status (128 + SIGBUS)" "$status" 135
	grep -q iterations= /tmp/guest.out && fail "the guest ran to its end"
	[ "$(counter killed)" -ge 1 ] || fail "killed did not count"
	dmesg | grep -qE "amd_sld: PMU: guestlock/[0-9]+ caused [0-9]+ bus locks in guest mode \(guest of VMM pid [0-9]+, vCPU thread [0-9]+\), sending SIGBUS" ||
		fail "no kill line"
	grep -qE " comm=guestlock source=pmu guest=1 .* action=kill cgroup=[0-9]+ map=[!-~]+\$" $SYS/events || fail "no kill event of the guest"
	unload
}

# Unload with a vCPU blocked in kvm_vcpu_block() after guest samples: the guest takes its
# split locks and halts (through int $0x80 to ring 0, IF=0) without one exit to the VMM, so
# KVM_RUN never returns. A work queued by a sample and still pending when the vCPU blocks
# would run only at the next guest entry, never here; unload kicks such tasks (TWA_SIGNAL:
# KVM_RUN returns EINTR, guestlock says so and runs it again) and must return promptly.
# Measured on 6.12.118: no work is left pending (no kick, no EINTR): vcpu_run() runs
# xfer_to_guest_mode_handle_work() after every exit, the HLT exit included, before it
# blocks; a work pending at the block takes a sample that lands after that check.
guest_unload_with_a_halted_vcpu() {
	need_kvm_guest
	load source=$GUEST_SOURCE
	"$GUESTLOCK" -n 20000 -p 20000 -H > /tmp/guest.out 2>&1 &
	vmm=$!
	echo $vmm > /tmp/guestlock.pid
	n=0
	while [ "$(counter bus_locks)" -lt 20000 ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
	expect_eq "bus_locks (the guest's, before it halts)" "$(counter bus_locks)" 20000
	sleep 1
	echo "VMM $vmm: state $(awk '{ print $3 }' /proc/$vmm/stat), wchan $(cat /proc/$vmm/wchan 2> /dev/null); guest_bus_locks=$(counter guest_bus_locks)"
	expect_eq "the VMM's state (blocked, interruptible)" "$(awk '{ print $3 }' /proc/$vmm/stat)" S
	start=$(awk '{ print $1 * 1000 }' /proc/uptime)
	unload
	ms=$(($(awk '{ print $1 * 1000 }' /proc/uptime) - start))
	echo "rmmod took $ms ms"
	dmesg | grep 'amd_sld: unload' | sed 's/^/dmesg: /'
	sed 's/^/vmm: /' /tmp/guest.out
	kill -0 $vmm 2> /dev/null || fail "the VMM died"
	kill $vmm
	wait $vmm 2> /dev/null
	[ "$ms" -lt 2000 ] || fail "rmmod took $ms ms with a halted vCPU"
}

# --- Cases by emulated machine (scripts/vmtest --machine)

CASES_zen5="load_unload_arms_and_restores_every_cpu params_valid_at_load params_invalid_at_load
params_valid_at_runtime params_invalid_at_runtime warn_message_and_log_ratelimit warn_line_is_the_kernels
fatal_kills_only_the_offender fatal_cannot_be_blocked_or_ignored ratelimit_10_one_process
ratelimit_10_three_processes ratelimit_100_one_process ratelimit_100_three_processes
off_disarms_and_keeps_counters policy_switches_while_events_flow cpu_offline_online_while_loaded
counters_equal_events single_step_and_ptrace_unchanged kernel_handle_bus_lock_never_called
event_record_format_and_attribution event_record_bound_and_loss_counted_under_storm
cli_without_the_module cli_status_matches_sysfs cli_set_validates_and_changes_the_live_policy
cli_top_events_and_export_name_the_offender cli_follower_counts_every_bus_lock
cgroup_recorded_and_resolved_by_the_cli
cli_needs_root_to_act_and_says_so
pmu_counts_exactly_and_attributes pmu_fatal_hits_the_sampled_task_only pmu_ratelimit_100_one_process
pmu_ratelimit_100_three_processes pmu_storm_interrupts_bounded pmu_cpu_hotplug
source_switches_at_runtime pmu_unload_under_load debugctl_rmw_preserves_other_bits
auto_runs_the_trap_and_guest_only_counters
incident_reproducer_caught_by_the_trap incident_reproducer_caught_by_the_pmu
glibc_lll_lock_wait_private_named glibc_lll_lock_wait_private_mapped
stress_ng_lockbus_counted_by_both_sources
aligned_operands_count_nothing kernel_trap_left_alone_with_the_pmu_source
unprivileged_readers_send_no_ipis counter_readers_during_unload boot_option_is_the_default"
CASES_zen4="refuses_bld_without_bus_lock_detect"
CASES_zen5_nopmu="refuses_pmu_without_a_pmu"
CASES_zen5_debugctl_ignored="arming_failure_is_all_or_nothing failed_loads_race_counter_readers"
CASES_bare="refuses_without_trap_or_pmu"
# On a kernel that arms Bus Lock Detect itself (6.13+; scripts/vmtest --kernel sid --module
# KO, Debian's 7.2), booted as it boots by default (its split_lock_detect=warn): the trap
# and its #DB are the kernel's, amd_sld runs the PMU source beside it. Every case that means
# something there: the emulated CPU under that kernel, the refusal of source=bld, the
# kernel's trap left alone with amd_sld loaded, parameters, sysfs and the CLI, every PMU
# case (policies acting on samples the NMI takes inside the kernel's #DB handling),
# the incident reproducer and stress-ng by the PMU (beside the kernel's trap), glibc's own wait
# (named by the kernel's handler: one bus lock, which perf cannot sample), boot option. Left out:
# the cases of amd_sld's own trap (DEBUGCTL arming and restore, #DB lines, per-trap counts,
# the trap's ratelimit and fatal, the event record's per-trap sequence) and
# kernel_trap_left_alone_with_the_pmu_source, which arms and clears DEBUGCTL[2] itself.
CASES_zen5_mainline="kernel_boots_with_emulated_cpu kvm_amd_loads_on_emulated_svm
refuses_bld_where_the_kernel_arms_it kernel_owns_the_trap_with_amd_sld_loaded
params_valid_at_load params_invalid_at_load params_valid_at_runtime params_invalid_at_runtime
policy_switches_while_events_flow single_step_and_ptrace_unchanged
cli_without_the_module cli_status_matches_sysfs cli_set_validates_and_changes_the_live_policy
cli_needs_root_to_act_and_says_so cgroup_recorded_and_resolved_by_the_cli pmu_counts_exactly_and_attributes pmu_fatal_hits_the_sampled_task_only
pmu_ratelimit_100_one_process pmu_ratelimit_100_three_processes pmu_storm_interrupts_bounded
pmu_cpu_hotplug pmu_unload_under_load incident_reproducer_caught_by_the_pmu
glibc_lll_lock_wait_private_named stress_ng_lockbus_counted_by_both_sources aligned_operands_count_nothing
unprivileged_readers_send_no_ipis counter_readers_during_unload boot_option_is_the_default"
# The same kernel on a Zen 5 with PerfMonV2 (scripts/qemu 0004), as KVM's mediated vPMU needs:
# the vPMU against amd_sld's counters, and the PMU source on the PerfMonV2 driver.
CASES_zen5_perfmonv2_mainline="kernel_boots_with_emulated_cpu mediated_vpmu_and_the_pmu_source
pmu_counts_exactly_and_attributes pmu_fatal_hits_the_sampled_task_only pmu_ratelimit_100_one_process
pmu_cpu_hotplug"
# Debian's stock kernels without CONFIG_RUST (scripts/vmtest --kernel bullseye|bookworm|
# trixie --module KO, the module built by scripts/debian-module): every case of the test
# kernel, and the emulated CPU under that kernel first. On 5.10, which has no
# handle_bus_lock(), the two cases that probe it skip, saying so. bullseye's 5.10.262 and
# bookworm's 6.1.192 run KVM guests with the host's DEBUGCTL: the KVM rule applies there.
CASES_stock="kernel_boots_with_emulated_cpu kvm_amd_loads_on_emulated_svm"
for suite in bullseye bookworm trixie; do
	eval "CASES_zen5_$suite=\"\$CASES_stock \$CASES_zen5\""
	for other in zen4 zen5_nopmu zen5_debugctl_ignored bare; do
		eval "CASES_${other}_$suite=\"\$CASES_stock \$CASES_$other\""
	done
done
# A real KVM guest (issue 16): the stock kernels have kvm_amd (the test kernel has no KVM).
CASES_GUEST="guest_bus_locks_counted_and_named guest_warn_line guest_ratelimit_10
guest_ratelimit_100 guest_fatal_kills_the_vmm guest_unload_with_a_halted_vcpu guest_and_host_counted_once_under_auto"
for suite in bullseye bookworm trixie mainline; do
	eval "CASES_zen5_$suite=\"\$CASES_zen5_$suite \$CASES_GUEST\""
done
CASES_zen5_bullseye="$CASES_zen5_bullseye kvm_rule_on_unsafe_kernel"
CASES_zen5_bookworm="$CASES_zen5_bookworm kvm_rule_on_unsafe_kernel"
CASES_zen5_trixie="$CASES_zen5_trixie auto_with_kvm_amd_counts_host_bus_locks_once"
# With --module on zen5 vmtest leaves amd_sld loaded for the reboot on these kernels as on
# the test kernel, and looks for 'DEBUGCTL restored' on the console.

machine=$(echo "${AMD_SLD_MACHINE:-zen5}" | tr -- - _)
case ${AMD_SLD_KERNEL:-test} in
test) ;;
bullseye | bookworm | trixie) machine=${machine}_$AMD_SLD_KERNEL ;;
*) machine=${machine}_mainline ;;
esac
eval "CASES=\${CASES_$machine-}"
[ -n "$CASES" ] || [ -n "$AMD_SLD_CASES" ] ||
	{ echo "amd_sld.sh: no cases for machine '${AMD_SLD_MACHINE:-zen5}' on kernel '${AMD_SLD_KERNEL:-test}'" >&2; exit 1; }
# shellcheck disable=SC2086 # a list of case names
run_cases ${AMD_SLD_CASES:-$CASES}
