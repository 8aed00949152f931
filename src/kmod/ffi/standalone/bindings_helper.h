/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The kernel headers bindgen reads for the standalone `kernel` crate (lib.rs), as the
 * kernel's rust/bindings/bindings_helper.h does in-tree, plus the macro constants it
 * cannot evaluate, as RUST_CONST_HELPER_* (renamed by scripts/standalone-build).
 */
#include <linux/capability.h>
#include <linux/cpu.h>
#include <linux/cpuhotplug.h>
#include <linux/cpumask.h>
#include <linux/delay.h>
#include <linux/errno.h>
#include <linux/fcntl.h>
#include <linux/fs.h>
#include <linux/jiffies.h>
#include <linux/kdebug.h>
#include <linux/kobject.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/notifier.h>
#include <linux/perf_event.h>
#include <linux/reboot.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/slab.h>
#include <linux/smp.h>
#include <linux/sysfs.h>
#include <linux/task_work.h>
#include <linux/timekeeping.h>
#include <linux/user_namespace.h>

const gfp_t RUST_CONST_HELPER_GFP_KERNEL = GFP_KERNEL;
const gfp_t RUST_CONST_HELPER_GFP_ATOMIC = GFP_ATOMIC;
const size_t RUST_CONST_HELPER_PAGE_SIZE = PAGE_SIZE;
