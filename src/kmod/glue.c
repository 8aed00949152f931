// SPDX-License-Identifier: GPL-2.0
/*
 * What Rust cannot express, or cannot express alike on every supported kernel (6.12 to
 * 7.x): the module_param_cb() and MODULE_AUTHOR() macros, kernel static inlines and
 * macros, and the kernel structures whose layout or bindgen shape changes between
 * versions (struct perf_event_attr grew, the fields of struct attribute_group and struct
 * cpuinfo_x86 moved into anonymous unions). No logic lives here: each function forwards
 * to the kernel, and the static_asserts pin the few kernel layouts and values that
 * src/kmod/ffi/ has to declare by hand because kernel::bindings does not carry them.
 * Kernel-version differences are found by Kbuild probing the kernel's headers
 * (AMD_SLD_HAVE_*), never by version number.
 */
#include <linux/cgroup.h>
#include <linux/kdebug.h>
#include <linux/module.h>
#include <linux/mm.h>
#include <linux/mmap_lock.h>
#include <linux/mutex.h>
#include <linux/notifier.h>
#include <linux/perf_event.h>
#include <linux/moduleparam.h>
#include <linux/rcupdate.h>
#include <linux/sched/signal.h>
#include <linux/sched/task.h>
#include <linux/smp.h>
#include <linux/stddef.h>
#include <linux/task_work.h>
#include <linux/freezer.h>
#include <linux/hrtimer.h>
#include <linux/irq_work.h>
#include <linux/percpu.h>
#include <linux/sysfs.h>
#include <asm/cpufeature.h>
#include <asm/kdebug.h>
#include <asm/msr.h>
#include <asm/processor.h>

MODULE_AUTHOR("amd-sld developers");

/* Implemented in Rust: src/kmod/ffi/param.rs. */
int amd_sld_param_set(const char *value, const struct kernel_param *kp);
int amd_sld_param_get(char *buffer, const struct kernel_param *kp);

static const struct kernel_param_ops amd_sld_param_ops = {
	.set = amd_sld_param_set,
	.get = amd_sld_param_get,
};

/*
 * Each parameter's handlers (a Rust `ffi::ParamHandlers`), statics of the crate root
 * src/kmod/amd_sld.rs, passed to the ops above as the parameter's arg; never written.
 */
struct amd_sld_param_handlers;
extern const struct amd_sld_param_handlers amd_sld_policy_param;
extern const struct amd_sld_param_handlers amd_sld_source_param;

module_param_cb(split_lock_detect, &amd_sld_param_ops, (void *)&amd_sld_policy_param, 0644);
MODULE_PARM_DESC(split_lock_detect,
		 "off, warn (default), fatal or ratelimit:N with N in 1..1000 bus locks/s, as the kernel's split_lock_detect=");

module_param_cb(source, &amd_sld_param_ops, (void *)&amd_sld_source_param, 0644);
MODULE_PARM_DESC(source,
		 "auto (default: the Bus Lock Detect trap where the CPU has it, else the PMU), bld or pmu (ls_locks.bus_lock)");

/* 6.16 renamed rdmsrl_safe()/wrmsrl_safe() to rdmsrq_safe()/wrmsrq_safe() (Kbuild probe). */
int amd_sld_rdmsr_safe(u32 msr, u64 *value);
int amd_sld_rdmsr_safe(u32 msr, u64 *value)
{
#ifdef AMD_SLD_HAVE_RDMSRQ
	return rdmsrq_safe(msr, value);
#else
	return rdmsrl_safe(msr, value);
#endif
}

int amd_sld_wrmsr_safe(u32 msr, u64 value);
int amd_sld_wrmsr_safe(u32 msr, u64 value)
{
#ifdef AMD_SLD_HAVE_RDMSRQ
	return wrmsrq_safe(msr, value);
#else
	return wrmsrl_safe(msr, value);
#endif
}

/* The boot CPU's vendor (X86_VENDOR_*) and its CPUID_7_ECX capability word. */
void amd_sld_boot_cpu_identity(u8 *vendor, u32 *cpuid_7_ecx);
void amd_sld_boot_cpu_identity(u8 *vendor, u32 *cpuid_7_ecx)
{
	*vendor = boot_cpu_data.x86_vendor;
	*cpuid_7_ecx = boot_cpu_data.x86_capability[CPUID_7_ECX];
}

/*
 * The one attribute group of /sys/kernel/amd_sld (src/kmod/ffi/sysfs.rs allows one
 * directory at a time): attrs is a static NULL-terminated list that outlives the group.
 */
int amd_sld_sysfs_create_group(struct kobject *kobj, struct attribute **attrs);
int amd_sld_sysfs_create_group(struct kobject *kobj, struct attribute **attrs)
{
	static struct attribute_group group;

	group.attrs = attrs;
	return sysfs_create_group(kobj, &group);
}

/*
 * A per-CPU kernel counter of the raw event config: sampling sample_freq times a second
 * with overflows to handler, or, without a handler, counting only and pinned. The
 * attribute is built here because its size grows with the kernel (136 bytes in 6.12).
 *
 * The sampler counts user mode only (exclude_kernel; on AMD the OS/USR bits filter by
 * CPL in guest mode too): every overflow is then a user-mode (or guest user-mode) bus lock
 * of the task running, never one of the kernel, of an interrupt or of a kernel thread
 * (docs/design.md, "The PMU source"). The tally counts every mode, for the exact total.
 * modes: AMD_SLD_MODES_ALL, host and guest; AMD_SLD_MODES_HOST, exclude_guest too, for
 * when perf refuses counters that count guest mode (7.0+, while VMs with a mediated vPMU
 * exist: -EOPNOTSUPP); AMD_SLD_MODES_GUEST, exclude_host (AMD's GuestOnly bit: guest mode
 * only, and nothing at all while EFER.SVME is clear), beside amd_sld's trap, which has
 * the host (source "bld+pmu(guest)").
 */
#define AMD_SLD_MODES_ALL 0
#define AMD_SLD_MODES_HOST 1
#define AMD_SLD_MODES_GUEST 2
struct perf_event *amd_sld_perf_counter_create(int cpu, u64 config, u64 sample_freq,
						perf_overflow_handler_t handler, int modes);
struct perf_event *amd_sld_perf_counter_create(int cpu, u64 config, u64 sample_freq,
						perf_overflow_handler_t handler, int modes)
{
	struct perf_event_attr attr = {
		.type = PERF_TYPE_RAW,
		.size = sizeof(attr),
		.config = config,
		.exclude_guest = modes == AMD_SLD_MODES_HOST,
		.exclude_host = modes == AMD_SLD_MODES_GUEST,
	};

	if (handler) {
		attr.freq = 1;
		attr.sample_freq = sample_freq;
		attr.exclude_kernel = 1;
	} else {
		attr.pinned = 1;
	}
	return perf_event_create_kernel_counter(&attr, cpu, NULL, handler, NULL);
}

/*
 * The user-mode instruction pointer of current, a user task interrupted in kernel mode:
 * the registers its entry into the kernel saved (task_pt_regs() is a macro).
 */
u64 amd_sld_current_user_ip(void);
u64 amd_sld_current_user_ip(void)
{
	return task_pt_regs(current)->ip;
}

/*
 * The file mapped at user address ip in current's address space: its base name ("%pD",
 * which reads the dentry's name safely against renames) into name, at most len - 1 bytes
 * and a NUL, and the range [start, end) of the mapping and the file offset mapped at its
 * start (so ip's offset into the file is ip - start + file_offset, and the caller may cache
 * the range). Process context, current's own task work:
 * mmap_read_trylock() (5.8+) never waits for a writer, so a task whose address space is
 * being changed at that instant gets no answer rather than a delay. -EAGAIN then; -ENOENT
 * for no mm, no mapping at ip, or an anonymous one.
 */
int amd_sld_current_ip_mapping(u64 ip, char *name, size_t len, u64 *start, u64 *end,
			       u64 *file_offset);
int amd_sld_current_ip_mapping(u64 ip, char *name, size_t len, u64 *start, u64 *end,
			       u64 *file_offset)
{
	struct mm_struct *mm = current->mm;
	struct vm_area_struct *vma;
	int status = -ENOENT;

	if (!mm || !len)
		return -ENOENT;
	if (!mmap_read_trylock(mm))
		return -EAGAIN;
	vma = find_vma(mm, ip);
	if (vma && vma->vm_start <= ip && vma->vm_file) {
		snprintf(name, len, "%pD", vma->vm_file);
		*start = vma->vm_start;
		*end = vma->vm_end;
		*file_offset = (u64)vma->vm_pgoff << PAGE_SHIFT;
		status = 0;
	}
	mmap_read_unlock(mm);
	return status;
}

/*
 * The signal bits the die notifiers before amd_sld asked for on this #DB (ptrace_triggered()
 * sets them; exc_debug_user() starts them as DR6's DR_STEP), read by amd_sld's notifier to
 * know whether the kernel still has anything to do after the chain. Same field 5.10..7.2.
 */
unsigned long amd_sld_current_virtual_dr6(void);
unsigned long amd_sld_current_virtual_dr6(void)
{
	return current->thread.virtual_dr6;
}

/*
 * Per-CPU storage (src/kmod/ffi/percpu.rs): __alloc_percpu() is a macro since 6.10
 * (allocation profiling); per_cpu_ptr(), raw_cpu_ptr() and cpu_possible() are macros.
 */
void __percpu *amd_sld_alloc_percpu(size_t size, size_t align);
void __percpu *amd_sld_alloc_percpu(size_t size, size_t align)
{
	return __alloc_percpu(size, align);
}

void amd_sld_free_percpu(void __percpu *ptr);
void amd_sld_free_percpu(void __percpu *ptr)
{
	free_percpu(ptr);
}

void *amd_sld_per_cpu_ptr(void __percpu *ptr, unsigned int cpu);
void *amd_sld_per_cpu_ptr(void __percpu *ptr, unsigned int cpu)
{
	return per_cpu_ptr(ptr, cpu);
}

void *amd_sld_this_cpu_ptr(void __percpu *ptr);
void *amd_sld_this_cpu_ptr(void __percpu *ptr)
{
	return raw_cpu_ptr(ptr);
}

bool amd_sld_cpu_possible(unsigned int cpu);
bool amd_sld_cpu_possible(unsigned int cpu)
{
	return cpu < nr_cpu_ids && cpu_possible(cpu);
}

/* user_mode() is a static inline; pt_regs' cs moved into a union with FRED (6.9). */
bool amd_sld_user_mode(const struct pt_regs *regs);
bool amd_sld_user_mode(const struct pt_regs *regs)
{
	return user_mode((struct pt_regs *)regs); /* const only from 6.2 on; it only reads */
}

/* preempt_disable() and preempt_enable() are macros. */
void amd_sld_preempt_disable(void);
void amd_sld_preempt_disable(void)
{
	preempt_disable();
}

void amd_sld_preempt_enable(void);
void amd_sld_preempt_enable(void)
{
	preempt_enable();
}

unsigned int amd_sld_this_cpu(void);
unsigned int amd_sld_this_cpu(void)
{
	return raw_smp_processor_id();
}

bool amd_sld_fatal_signal_pending(void);
bool amd_sld_fatal_signal_pending(void)
{
	return fatal_signal_pending(current);
}

/*
 * The current task's cgroup v2 ID: the kernfs node ID of its cgroup on the default
 * hierarchy, which is the inode number of that cgroup's directory in a cgroup2 mount.
 * task_dfl_cgroup() and cgroup_id() are static inlines, the same from 5.10 to 7.2
 * (task_css_set(task)->dfl_cgrp, cgrp->kn->id), so no probe. This is what
 * bpf_get_current_cgroup_id() does (kernel/bpf/helpers.c), which BPF programs call from
 * perf's overflow NMI: rcu_read_lock() is NMI-safe, the css_set and the cgroup are freed
 * after a grace period, and nothing here takes a lock, sleeps or allocates. #DB (interrupts
 * off) and NMI context alike. Without CONFIG_CGROUPS: 0, "unknown".
 */
/*
 * The current address space's ID, unique for the life of the system (x86's mm context
 * ctx_id, which switch_mm() compares for the same reason), or 0 for a kernel thread.
 * current->mm is the running task's own: it cannot be freed under it, even in an NMI that
 * lands in exec_mmap() (the old mm is dropped later, by this task).
 */
u64 amd_sld_current_mm_id(void);
u64 amd_sld_current_mm_id(void)
{
	struct mm_struct *mm = current->mm;

	return mm ? mm->context.ctx_id : 0;
}

u64 amd_sld_current_cgroup_id(void);
u64 amd_sld_current_cgroup_id(void)
{
#ifdef CONFIG_CGROUPS
	u64 id;

	rcu_read_lock();
	id = cgroup_id(task_dfl_cgroup(current));
	rcu_read_unlock();
	return id;
#else
	return 0;
#endif
}

/* local64_read() is a static inline; struct perf_event is not in the bindings' surface. */
u64 amd_sld_perf_event_count(struct perf_event *event);
u64 amd_sld_perf_event_count(struct perf_event *event)
{
	return local64_read(&event->count);
}

/* READ_ONCE() is a macro; struct perf_event is not in the bindings' surface. */
int amd_sld_perf_event_state(struct perf_event *event);
int amd_sld_perf_event_state(struct perf_event *event)
{
	return READ_ONCE(event->state);
}

/*
 * set_current_state() is a macro: sleep killably until an absolute CLOCK_MONOTONIC time.
 * TASK_FREEZABLE: the freezer (suspend, cgroup freezer) freezes the task in this sleep
 * rather than waiting for it (kernel/freezer.c __set_task_frozen()); no lock is held here.
 */
int amd_sld_sleep_killable_until(ktime_t expires, u64 slack_ns);
int amd_sld_sleep_killable_until(ktime_t expires, u64 slack_ns)
{
#ifdef TASK_FREEZABLE
	set_current_state(TASK_KILLABLE | TASK_FREEZABLE);
	return schedule_hrtimeout_range(&expires, slack_ns, HRTIMER_MODE_ABS);
#else /* before 6.1: the freezer skips the task while it sleeps, and freezes it after */
	set_current_state(TASK_KILLABLE);
	return freezable_schedule_hrtimeout_range(&expires, slack_ns, HRTIMER_MODE_ABS);
#endif
}

/* The counters' mutex (src/kmod/ffi/perf.rs CountersLocked); mutex_lock() is a macro. */
static DEFINE_MUTEX(amd_sld_counters_mutex);

void amd_sld_counters_lock(void);
void amd_sld_counters_lock(void)
{
	mutex_lock(&amd_sld_counters_mutex);
}

int amd_sld_counters_trylock(void);
int amd_sld_counters_trylock(void)
{
	return mutex_trylock(&amd_sld_counters_mutex);
}

void amd_sld_counters_unlock(void);
void amd_sld_counters_unlock(void)
{
	mutex_unlock(&amd_sld_counters_mutex);
}

/*
 * Task work for current, queued from NMI context: TWA_NMI_CURRENT since 6.11. Before, as
 * kernel/task_work.c does it since: link the work without notification (TWA_NONE, an
 * NMI-safe cmpxchg), set TIF_NOTIFY_RESUME on current right here in the NMI, and raise an
 * irq_work whose self-IPI arrives as soon as the NMI returns, so that the return to user
 * mode goes through the path that looks at TIF flags (an NMI's own return does not).
 */
#ifndef AMD_SLD_HAVE_TWA_NMI_CURRENT
static void amd_sld_nmi_resume(struct irq_work *work)
{
	/* Nothing: the interrupt's return to user mode runs the work. */
}

/*
 * Zero-initialised: the module loader does not apply relocations to a module's per-CPU
 * data (layout_and_allocate() clears its SHF_ALLOC), so `.func` is stored at each use;
 * every store writes the same value, and an all-zero irq_work is otherwise a fresh one.
 */
static DEFINE_PER_CPU(struct irq_work, amd_sld_nmi_resume_work);
#endif

int amd_sld_task_work_add_from_nmi(struct callback_head *work);
int amd_sld_task_work_add_from_nmi(struct callback_head *work)
{
#ifdef AMD_SLD_HAVE_TWA_NMI_CURRENT
	return task_work_add(current, work, TWA_NMI_CURRENT);
#else
	struct irq_work *resume = this_cpu_ptr(&amd_sld_nmi_resume_work);
	int status = task_work_add(current, work, TWA_NONE);

	if (!status) {
		set_tsk_thread_flag(current, TIF_NOTIFY_RESUME);
		WRITE_ONCE(resume->func, amd_sld_nmi_resume);
		irq_work_queue(resume);
	}
	return status;
#endif
}

/* Waits until no irq_work of amd_sld_task_work_add_from_nmi() can still run. */
void amd_sld_task_work_from_nmi_sync(void);
void amd_sld_task_work_from_nmi_sync(void)
{
#ifndef AMD_SLD_HAVE_TWA_NMI_CURRENT
	int cpu;

	for_each_possible_cpu(cpu)
		irq_work_sync(per_cpu_ptr(&amd_sld_nmi_resume_work, cpu));
#endif
}

/*
 * At unload: makes the task of a pending NMI work (src/kmod/ffi/perf.rs) run its task works
 * now, by queueing kick on it with TWA_SIGNAL (set_notify_signal(): TIF_NOTIFY_SIGNAL and a
 * wake-up from an interruptible sleep). A task blocked in the kernel with a work pending (a
 * vCPU thread in kvm_vcpu_block(), a task in a blocking system call) would otherwise run it
 * only when it next returns to user mode or enters its guest, and unload would wait for
 * that. task_work_cancel() would not disturb the task, but no kernel exports it (5.10 to
 * 7.2); the kick is what io_uring does to other tasks: an interrupted system call restarts,
 * KVM_RUN returns -EINTR (KVM_EXIT_INTR) to its VMM, as for any signal.
 * *task_slot is the slot's task, cleared by the work as it starts, before the task can exit
 * (exit_task_work() runs pending works): read under RCU, it is a task whose final put is
 * an RCU callback not yet run. Returns task_work_add()'s status, or -ESRCH if no task.
 */
int amd_sld_task_work_kick(const unsigned long *task_slot, struct callback_head *kick,
			   task_work_func_t func);
int amd_sld_task_work_kick(const unsigned long *task_slot, struct callback_head *kick,
			   task_work_func_t func)
{
	struct task_struct *task;
	int status;

	rcu_read_lock();
	task = (struct task_struct *)READ_ONCE(*task_slot);
	if (task)
		get_task_struct(task);
	rcu_read_unlock();
	if (!task)
		return -ESRCH;
	init_task_work(kick, func);
	status = task_work_add(task, kick, TWA_SIGNAL);
	put_task_struct(task);
	return status;
}

/* A macro for synchronize_rcu() on kernels without CONFIG_TASKS_RCU. */
void amd_sld_synchronize_rcu_tasks(void);
void amd_sld_synchronize_rcu_tasks(void)
{
	synchronize_rcu_tasks();
}

/* struct module's layout is the kernel's: the name of a module on the module notifier chain. */
const char *amd_sld_module_name(const struct module *mod);
const char *amd_sld_module_name(const struct module *mod)
{
	return mod->name;
}

/* Declared by hand in src/kmod/ffi/: keep these in step. */
static_assert(DIE_DEBUG == 3);
/* src/kmod/ffi/modules.rs. */
static_assert(MODULE_STATE_LIVE == 0 && MODULE_STATE_COMING == 1 && MODULE_STATE_GOING == 2);
static_assert(NOTIFY_DONE == 0 && NOTIFY_OK == 1 && NOTIFY_STOP_MASK == 0x8000);
static_assert(TWA_RESUME == 1);
static_assert(PERF_TYPE_RAW == 4);
/* src/kmod/ffi/perf.rs: a counter that would count guest mode, refused (7.0+). */
static_assert(EOPNOTSUPP == 95);
static_assert(PERF_EVENT_STATE_INACTIVE == 0 && PERF_EVENT_STATE_ERROR < 0 &&
	      PERF_EVENT_STATE_OFF < 0);
/* src/logic/src/x86.rs: CAPABILITY_WORD_CPUID_7_ECX. */
static_assert(CPUID_7_ECX == 16);
static_assert(offsetof(struct die_args, regs) == 0);
static_assert(offsetof(struct die_args, err) == 2 * sizeof(void *));
static_assert(sizeof(((struct die_args *)0)->err) == sizeof(unsigned long));
