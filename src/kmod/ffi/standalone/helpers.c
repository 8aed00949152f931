// SPDX-License-Identifier: GPL-2.0
/*
 * The static inlines and macros the standalone `kernel` crate (lib.rs) calls, as the
 * kernel's rust/helpers/ provide them to the in-tree crate. No logic: each forwards.
 */
#include <linux/printk.h>
#include <linux/sched.h>
#include <linux/slab.h>

struct task_struct *amd_sld_kernel_get_current(void);
struct task_struct *amd_sld_kernel_get_current(void)
{
	return current;
}

void *amd_sld_kernel_kmalloc(size_t size, gfp_t flags);
void *amd_sld_kernel_kmalloc(size_t size, gfp_t flags)
{
	return kmalloc(size, flags);
}

int amd_sld_kernel_printk(const char *format, const char *prefix, const char *message);
int amd_sld_kernel_printk(const char *format, const char *prefix, const char *message)
{
	return printk(format, prefix, message);
}
