// SPDX-License-Identifier: GPL-2.0
//
// hello.bpf.c: the pipeline self-test probe. Counts getppid(2) calls made by
// one thread group (set from user space through the `target_tgid` global
// before load) in a per-CPU array and pushes one `struct hello_event` per
// call into a ring buffer. The parent's tgid is read from the current
// task_struct with CO-RE so that relocation is exercised too.
//
// Mirrored in Rust by ebpf-probes/src/hello.rs (`HelloEvent`, slot indexes):
// keep both in sync.

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

// Slots of the per-CPU `hello_counts` array.
#define HELLO_SLOT_CALLS 0
#define HELLO_SLOT_DROPPED 1
#define HELLO_SLOTS 2

// 16 bytes, no padding; the Rust mirror asserts the same layout.
struct hello_event {
	__u64 ktime_ns; // bpf_ktime_get_ns() at syscall entry
	__u32 tgid;     // thread group (process) id of the caller
	__u32 ppid;     // caller's real_parent->tgid, read with CO-RE
};

// Set by the loader (aya `override_global`); 0 means "nobody" so that an
// object loaded without configuration counts nothing.
const volatile __u32 target_tgid = 0;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HELLO_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} hello_counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} hello_events SEC(".maps");

static __always_inline void bump(__u32 slot)
{
	__u64 *value = bpf_map_lookup_elem(&hello_counts, &slot);

	if (value)
		*value += 1; // per-CPU slot: no atomics needed
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int hello_count(void *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct task_struct *task;
	struct hello_event *event;

	if (target_tgid == 0 || tgid != target_tgid)
		return 0;

	bump(HELLO_SLOT_CALLS);

	event = bpf_ringbuf_reserve(&hello_events, sizeof(*event), 0);
	if (!event) {
		bump(HELLO_SLOT_DROPPED);
		return 0;
	}
	task = (struct task_struct *)bpf_get_current_task();
	event->ktime_ns = bpf_ktime_get_ns();
	event->tgid = tgid;
	event->ppid = BPF_CORE_READ(task, real_parent, tgid);
	bpf_ringbuf_submit(event, 0);
	return 0;
}
