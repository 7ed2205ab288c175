// SPDX-License-Identifier: GPL-2.0
//
// overlay_trace.bpf.c: overlayfs copy-up, whiteout and opaque-dir events,
// exact per system call, from tracepoints only (the "tracepoints" rung of
// the strategy ladder), plus page-cache accounting per inode and cgroup.
//
// The system call is the unit. raw_syscalls:sys_enter records the calls
// user space marked interesting (`syscall_class`); the upper filesystem's
// inode tracepoints then say what overlay did inside that call:
//   - ext4_allocate_inode in a registered overlay workdir (`workdirs`):
//     regular file = copy-up (data when writes land on it inside the call,
//     else metadata), directory = dir copy-up, char 0/0 = the mount's shared
//     whiteout (remembered in `whiteouts`);
//   - ext4_mark_inode_dirty on a whiteout inode (tp_btf, for i_nlink): the
//     shared whiteout linked again (nlink up) = one more whiteout; a
//     whiteout's nlink going down = a whiteout replaced (create over it);
//   - ext4_*write_end on an inode allocated in the call: copied bytes;
//   - ext4_free_inode of an inode allocated in the call: a temporary
//     (overlay's own checks, ovl_clear_empty), not a copy-up.
// raw_syscalls:sys_exit classifies and pushes one `struct ovl_event` per
// result into the ring buffer, and bumps the per-CPU totals.
//
// Where ext4 is a module (Debian), the tp_btf programs cannot attach
// (aya 0.14 does not resolve module BTF): user space attaches their
// classic-tracepoint twins instead, ovl_hk_allocate_inode and
// ovl_tp_mark_inode_dirty, which read the records' fixed layouts. An
// upper dir on xfs is traced by the programs of the xfs section (end of
// file), which feed the same per-syscall items.
//
// Mirrored in Rust by ebpf-probes/src/events.rs (struct layout, kinds,
// slots, classes): keep both in sync.

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

#define S_IFMT 00170000
#define S_IFREG 0100000
#define S_IFDIR 0040000
#define S_IFCHR 0020000

#define MAX_ITEMS 8
#define PATH_LEN 256
#define NR_SYSCALLS 512

// Syscall classes (user space fills `syscall_class`; low byte = class,
// second byte = index of the path argument, 0xff = none).
#define CLASS_NONE 0
#define CLASS_OTHER 1  // may copy up (chmod, chown, utimes, xattrs, ...)
#define CLASS_OPEN 2   // open family, truncate: copy-ups here carry data
#define CLASS_CREATE 3 // mkdir, mknod, symlink: may create over a whiteout
#define CLASS_REMOVE 4 // unlink, rmdir: may whiteout
#define CLASS_RENAME 5 // rename family: may whiteout (RENAME_WHITEOUT)
#define CLASS_MOUNT 6  // mount family: overlay's own mount-time checks
#define CLASS_LAZY 7   // not marked interesting: state created lazily

// Item kinds, as allocated (internal).
#define ITEM_REG 1
#define ITEM_DIR 2
#define ITEM_WHITEOUT 3 // shared whiteout allocated, linked, or RENAME_WHITEOUT
#define ITEM_OTHER 4    // symlink, fifo... copied up
#define ITEM_DATA_FILL 5 // data written into a metacopy inode

// Event kinds (what user space sees).
#define KIND_DATA 1
#define KIND_METADATA 2
#define KIND_DIR 3
#define KIND_WHITEOUT 4
#define KIND_OPAQUE 5
#define KIND_CREATE_OVER_WHITEOUT 6

// Slots of the per-CPU `totals` array.
#define SLOT_DATA 0
#define SLOT_METADATA 1
#define SLOT_DIR 2
#define SLOT_WHITEOUT 3
#define SLOT_OPAQUE 4
#define SLOT_BYTES 5
#define SLOT_LOST_RINGBUF 6
#define SLOT_LOST_ITEMS 7
#define SLOT_LOST_TASKS 8
#define SLOT_EVENTS 9
#define SLOT_CREATE_OVER_WHITEOUT 10
#define SLOT_LAZY 11
#define SLOTS 12

struct inode_key {
	__u32 dev; // kernel dev_t (major << 20 | minor)
	__u32 pad;
	__u64 ino;
};

struct workdir_value {
	__u32 mount_id;
	__u32 metacopy; // 1 when the overlay has metacopy=on
};

struct whiteout_value {
	__u32 mount_id;
	__u32 nlink; // last i_nlink seen
};

struct inflight {
	__u64 start_ns;
	__u64 path_ptr;
	__s32 nr;
	__u32 class;
	__u32 registered; // CLASS_MOUNT: a pending workdir was registered
	__u32 pad;
};

// Mount ids from this base up name overlays registered by the BPF side in
// their mount syscall (the first dir it creates is `work/work`), before
// user space read them from mountinfo; user space adopts them.
#define PENDING_BASE 0x80000000u

struct item {
	__u64 ino;
	__u64 bytes;
	__u32 mount_id;
	__u16 kind;
	__u16 writes;
	__u16 freed;
	__u16 pending; // xfs O_TMPFILE inode whose dir is not known yet
	__u32 metacopy;
};

struct task_state {
	__u32 dev;
	__u32 nitems;
	__u32 whiteout_removed;
	__u32 overflow;
	__u32 rename_mount; // xfs: the mount of this syscall's rename
	__u32 pad;
	struct item items[MAX_ITEMS];
};

// 344 bytes; the Rust mirror asserts the same layout.
struct ovl_event {
	__u64 start_ns;    // syscall entry, bpf_ktime_get_ns()
	__u64 duration_ns; // syscall entry to exit
	__u64 bytes;       // data copied inside the syscall
	__u64 ino;         // upper inode (copy-up, whiteout, opaque dir)
	__u64 cgroup_id;
	__u32 dev;         // kernel dev_t of the upper filesystem
	__u32 mount_id;    // user space's id of the overlay (0 = unknown)
	__u32 pid;         // thread id
	__u32 tgid;        // process id
	__s32 syscall_nr;
	__u32 kind;
	__u32 writes;      // write_end calls summed into bytes
	__u32 pad;
	char comm[16];
	char path[PATH_LEN]; // the syscall's path argument, when it has one
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct inode_key);
	__type(value, struct workdir_value);
} workdirs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct inode_key);
	__type(value, struct whiteout_value);
} whiteouts SEC(".maps");

// Upper root dirs -> mount id, for RENAME_WHITEOUT outside any copy-up.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct inode_key);
	__type(value, __u32);
} uppers SEC(".maps");

// Dirs copied up while traced -> mount id: where a RENAME_WHITEOUT below
// the upper root finds its mount when dentries cannot be walked.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct inode_key);
	__type(value, __u32);
} upper_dirs SEC(".maps");

// Metadata-only copy-ups: their data is copied later, inside an open.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct inode_key);
	__type(value, __u32);
} metacopies SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, NR_SYSCALLS);
	__type(key, __u32);
	__type(value, __u32);
} syscall_class SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct inflight);
} inflights SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct task_state);
} tasks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct task_state);
} scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} totals SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 * 1024 * 1024);
} events SEC(".maps");

// Slot 0: lazily created inflight records not yet closed by sys_exit
// (atomic): while 0, sys_exit of an uninteresting syscall returns at once.
// Slot 1: the last pending mount id handed out.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __s64);
} lazy_outstanding SEC(".maps");

static __always_inline void lazy_add(__s64 n)
{
	__u32 zero = 0;
	__s64 *value = bpf_map_lookup_elem(&lazy_outstanding, &zero);

	if (value)
		__sync_fetch_and_add(value, n);
}

static __always_inline void add(__u32 slot, __u64 n)
{
	__u64 *value = bpf_map_lookup_elem(&totals, &slot);

	if (value)
		*value += n; // per-CPU slot
}

// ------------------------------------------------------------ syscalls

SEC("tracepoint/raw_syscalls/sys_enter")
int ovl_sys_enter(struct trace_event_raw_sys_enter *ctx)
{
	__u32 nr = (__u32)ctx->id;
	__u32 *class;
	__u32 path_arg;
	struct inflight in = {};
	__u64 id;

	if (nr >= NR_SYSCALLS)
		return 0;
	class = bpf_map_lookup_elem(&syscall_class, &nr);
	if (!class || (*class & 0xff) == CLASS_NONE)
		return 0;
	id = bpf_get_current_pid_tgid();
	in.start_ns = bpf_ktime_get_ns();
	in.nr = nr;
	in.class = *class & 0xff;
	path_arg = (*class >> 8) & 0xff;
	if (path_arg < 6)
		in.path_ptr = BPF_CORE_READ(ctx, args[path_arg]);
	if (bpf_map_update_elem(&inflights, &id, &in, BPF_ANY))
		add(SLOT_LOST_TASKS, 1);
	return 0;
}

// The state of the current thread's syscall, created on its first overlay
// event; a syscall not marked interesting gets a lazy inflight record.
static __always_inline struct task_state *state_for(__u64 id, __u32 dev)
{
	struct task_state *state = bpf_map_lookup_elem(&tasks, &id);
	__u32 zero = 0;

	if (state)
		return state;
	if (!bpf_map_lookup_elem(&inflights, &id)) {
		struct inflight in = {};

		in.start_ns = bpf_ktime_get_ns();
		in.nr = -1;
		in.class = CLASS_LAZY;
		if (!bpf_map_update_elem(&inflights, &id, &in, BPF_NOEXIST)) {
			add(SLOT_LAZY, 1);
			lazy_add(1);
		}
	}
	state = bpf_map_lookup_elem(&scratch, &zero);
	if (!state)
		return 0;
	__builtin_memset(state, 0, sizeof(*state));
	state->dev = dev;
	if (bpf_map_update_elem(&tasks, &id, state, BPF_NOEXIST)) {
		add(SLOT_LOST_TASKS, 1);
		return 0;
	}
	return bpf_map_lookup_elem(&tasks, &id);
}

static __always_inline void push_item(struct task_state *state, __u64 ino, __u32 mount_id,
				      __u16 kind, __u32 metacopy)
{
	__u32 n = state->nitems;

	if (n >= MAX_ITEMS) {
		state->overflow += 1;
		return;
	}
	state->items[n].ino = ino;
	state->items[n].bytes = 0;
	state->items[n].mount_id = mount_id;
	state->items[n].kind = kind;
	state->items[n].writes = 0;
	state->items[n].freed = 0;
	state->items[n].pending = 0;
	state->items[n].metacopy = metacopy;
	state->nitems = n + 1;
}

static __always_inline int has_whiteout(struct task_state *state)
{
	for (int i = 0; i < MAX_ITEMS; i++) {
		if (i >= state->nitems)
			break;
		if (state->items[i].kind == ITEM_WHITEOUT)
			return 1;
	}
	return 0;
}

// Whether the syscall already has an item for `ino` (xfs adds a dir entry
// twice when the dir changes format mid-insert).
static __always_inline int has_item(struct task_state *state, __u64 ino)
{
	for (int i = 0; i < MAX_ITEMS; i++) {
		if (i >= state->nitems)
			break;
		if (state->items[i].ino == ino && !state->items[i].freed)
			return 1;
	}
	return 0;
}

static __always_inline void emit(struct inflight *in, struct task_state *state, struct item *item,
				 __u32 kind, __u64 now, __u64 id)
{
	struct ovl_event *ev;

	add(SLOT_EVENTS, 1);
	switch (kind) {
	case KIND_DATA:
		add(SLOT_DATA, 1);
		add(SLOT_BYTES, item->bytes);
		break;
	case KIND_METADATA:
		add(SLOT_METADATA, 1);
		break;
	case KIND_DIR:
		add(SLOT_DIR, 1);
		break;
	case KIND_WHITEOUT:
		add(SLOT_WHITEOUT, 1);
		break;
	case KIND_OPAQUE:
		add(SLOT_OPAQUE, 1);
		break;
	case KIND_CREATE_OVER_WHITEOUT:
		add(SLOT_CREATE_OVER_WHITEOUT, 1);
		break;
	}
	ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev) {
		add(SLOT_LOST_RINGBUF, 1);
		return;
	}
	ev->start_ns = in->start_ns;
	ev->duration_ns = now - in->start_ns;
	ev->bytes = item->bytes;
	ev->ino = item->ino;
	ev->cgroup_id = bpf_get_current_cgroup_id();
	ev->dev = state->dev;
	ev->mount_id = item->mount_id;
	ev->pid = (__u32)id;
	ev->tgid = id >> 32;
	ev->syscall_nr = in->nr;
	ev->kind = kind;
	ev->writes = item->writes;
	ev->pad = 0;
	bpf_get_current_comm(ev->comm, sizeof(ev->comm));
	ev->path[0] = 0;
	if (in->path_ptr)
		bpf_probe_read_user_str(ev->path, sizeof(ev->path), (void *)in->path_ptr);
	bpf_ringbuf_submit(ev, 0);
}

SEC("tracepoint/raw_syscalls/sys_exit")
int ovl_sys_exit(struct trace_event_raw_sys_exit *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct task_state *state;
	struct inflight *in;
	__u32 nr = (__u32)ctx->id;
	__u32 *class;
	__u64 now;
	int last_alloc = -1;
	int whiteout_done = 0;

	if (nr < NR_SYSCALLS) {
		class = bpf_map_lookup_elem(&syscall_class, &nr);
		if (!class || (*class & 0xff) == CLASS_NONE) {
			// Only lazily created state needs a look here.
			__u32 zero = 0;
			__s64 *lazy = bpf_map_lookup_elem(&lazy_outstanding, &zero);

			if (!lazy || *lazy <= 0)
				return 0;
		}
	}
	in = bpf_map_lookup_elem(&inflights, &id);
	if (!in)
		return 0;
	if (in->class == CLASS_LAZY)
		lazy_add(-1);
	state = bpf_map_lookup_elem(&tasks, &id);
	if (!state || in->class == CLASS_MOUNT)
		goto out;
	now = bpf_ktime_get_ns();
	if (in->class == CLASS_LAZY)
		in->nr = nr;
	add(SLOT_LOST_ITEMS, state->overflow);

	// The object created over a whiteout is the last inode allocated.
	if (state->whiteout_removed && (in->class == CLASS_CREATE || in->class == CLASS_OPEN)) {
		for (int i = 0; i < MAX_ITEMS; i++) {
			if (i >= state->nitems)
				break;
			if (!state->items[i].freed &&
			    (state->items[i].kind == ITEM_REG || state->items[i].kind == ITEM_DIR ||
			     state->items[i].kind == ITEM_OTHER))
				last_alloc = i;
		}
	}

	for (int i = 0; i < MAX_ITEMS; i++) {
		struct item *item;
		__u32 kind = 0;

		if (i >= state->nitems)
			break;
		item = &state->items[i];
		if (item->freed || item->pending)
			continue;
		switch (item->kind) {
		case ITEM_REG:
			if (i == last_alloc)
				kind = KIND_CREATE_OVER_WHITEOUT;
			else if (item->writes || item->bytes || in->class == CLASS_OPEN ||
				 !item->metacopy)
				kind = KIND_DATA;
			else
				kind = KIND_METADATA;
			break;
		case ITEM_DIR:
			kind = i == last_alloc ? KIND_OPAQUE : KIND_DIR;
			break;
		case ITEM_OTHER:
			kind = i == last_alloc ? KIND_CREATE_OVER_WHITEOUT : KIND_METADATA;
			break;
		case ITEM_DATA_FILL:
			kind = KIND_DATA;
			break;
		case ITEM_WHITEOUT:
			if (!whiteout_done)
				kind = KIND_WHITEOUT;
			whiteout_done = 1;
			break;
		}
		if (!kind)
			continue;
		if (kind == KIND_METADATA && item->kind == ITEM_REG) {
			struct inode_key key = { .dev = state->dev, .ino = item->ino };

			bpf_map_update_elem(&metacopies, &key, &item->mount_id, BPF_ANY);
		}
		if ((kind == KIND_DIR || kind == KIND_OPAQUE) && item->mount_id) {
			struct inode_key key = { .dev = state->dev, .ino = item->ino };

			bpf_map_update_elem(&upper_dirs, &key, &item->mount_id, BPF_ANY);
		}
		emit(in, state, item, kind, now, id);
	}
out:
	if (state)
		bpf_map_delete_elem(&tasks, &id);
	bpf_map_delete_elem(&inflights, &id);
	return 0;
}

// A thread that dies inside a syscall (killed) never reaches sys_exit:
// drop its records so the maps do not fill up.
SEC("tracepoint/sched/sched_process_exit")
int ovl_task_exit(void *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct inflight *in = bpf_map_lookup_elem(&inflights, &id);

	if (!in)
		return 0;
	if (in->class == CLASS_LAZY)
		lazy_add(-1);
	bpf_map_delete_elem(&tasks, &id);
	bpf_map_delete_elem(&inflights, &id);
	return 0;
}

// ------------------------------------------------------------ ext4

// Walks up from `dir` (at most 16 levels) to a registered upper root.
static __always_inline __u32 upper_mount_of(struct inode *dir, __u32 dev)
{
	struct hlist_node *first = BPF_CORE_READ(dir, i_dentry.first);
	struct dentry *dentry;
	struct inode_key key = { .dev = dev };

	if (!first)
		return 0;
	dentry = container_of(first, struct dentry, d_u.d_alias);
	for (int i = 0; i < 16; i++) {
		__u32 *mount_id;
		struct dentry *parent;

		key.ino = BPF_CORE_READ(dentry, d_inode, i_ino);
		mount_id = bpf_map_lookup_elem(&uppers, &key);
		if (mount_id)
			return *mount_id;
		parent = BPF_CORE_READ(dentry, d_parent);
		if (!parent || parent == dentry)
			break;
		dentry = parent;
	}
	return 0;
}

SEC("tp_btf/ext4_allocate_inode")
int BPF_PROG(ovl_allocate_inode, struct inode *inode, struct inode *dir, int mode)
{
	struct inode_key key = {};
	struct workdir_value *wd;
	struct task_state *state;
	struct inflight *in;
	__u64 id = bpf_get_current_pid_tgid();
	__u32 type = mode & S_IFMT;
	__u16 kind;

	key.dev = BPF_CORE_READ(dir, i_sb, s_dev);
	key.ino = BPF_CORE_READ(dir, i_ino);
	wd = bpf_map_lookup_elem(&workdirs, &key);
	if (!wd && type == S_IFDIR) {
		// An overlay being mounted: its first new dir is work/work.
		in = bpf_map_lookup_elem(&inflights, &id);
		if (in && in->class == CLASS_MOUNT && !in->registered) {
			struct inode_key wkey = { .dev = key.dev, .ino = BPF_CORE_READ(inode, i_ino) };
			struct workdir_value value = { .metacopy = 1 };
			__u32 one = 1;
			__s64 *counter = bpf_map_lookup_elem(&lazy_outstanding, &one);

			if (counter) {
				value.mount_id = PENDING_BASE | (__u32)__sync_fetch_and_add(counter, 1);
				bpf_map_update_elem(&workdirs, &wkey, &value, BPF_NOEXIST);
				in->registered = 1;
			}
		}
		return 0;
	}
	if (!wd) {
		__u32 mount_id;

		// RENAME_WHITEOUT: ext4 makes the whiteout right in the upper dir.
		if (type != S_IFCHR)
			return 0;
		in = bpf_map_lookup_elem(&inflights, &id);
		if (!in || in->class != CLASS_RENAME)
			return 0;
		// Only overlay asks for RENAME_WHITEOUT: an overlay not registered
		// yet still gets its whiteout, with mount id 0 when none is found.
		mount_id = upper_mount_of(dir, key.dev);
		state = state_for(id, key.dev);
		if (!state)
			return 0;
		if (!mount_id && state->nitems > 0)
			mount_id = state->items[0].mount_id;
		push_item(state, BPF_CORE_READ(inode, i_ino), mount_id, ITEM_WHITEOUT, 0);
		return 0;
	}
	state = state_for(id, key.dev);
	if (!state)
		return 0;
	switch (type) {
	case S_IFREG:
		kind = ITEM_REG;
		break;
	case S_IFDIR:
		kind = ITEM_DIR;
		break;
	case S_IFCHR: {
		struct inode_key wkey = { .dev = key.dev, .ino = BPF_CORE_READ(inode, i_ino) };
		struct whiteout_value wv = { .mount_id = wd->mount_id, .nlink = 1 };

		in = bpf_map_lookup_elem(&inflights, &id);
		// Overlay's mount-time checks make whiteouts too: not shared ones.
		if (in && in->class == CLASS_MOUNT)
			return 0;
		bpf_map_update_elem(&whiteouts, &wkey, &wv, BPF_ANY);
		kind = ITEM_WHITEOUT;
		break;
	}
	default:
		kind = ITEM_OTHER;
	}
	push_item(state, BPF_CORE_READ(inode, i_ino), wd->mount_id, kind, wd->metacopy);
	return 0;
}

SEC("tp_btf/ext4_mark_inode_dirty")
int BPF_PROG(ovl_mark_inode_dirty, struct inode *inode, unsigned long ip)
{
	umode_t mode = BPF_CORE_READ(inode, i_mode);
	struct inode_key key = {};
	struct whiteout_value *wv;
	struct task_state *state;
	__u64 id;
	__u32 nlink;

	if ((mode & S_IFMT) != S_IFCHR || BPF_CORE_READ(inode, i_rdev) != 0)
		return 0;
	id = bpf_get_current_pid_tgid();
	key.dev = BPF_CORE_READ(inode, i_sb, s_dev);
	key.ino = BPF_CORE_READ(inode, i_ino);
	nlink = BPF_CORE_READ(inode, __i_nlink);
	wv = bpf_map_lookup_elem(&whiteouts, &key);
	if (!wv) {
		// An old whiteout (not this mount's shared one) losing a link:
		// something is being created over it.
		state = bpf_map_lookup_elem(&tasks, &id);
		if (state)
			state->whiteout_removed = 1;
		return 0;
	}
	if (nlink == wv->nlink)
		return 0;
	state = state_for(id, key.dev);
	if (nlink > wv->nlink) {
		if (state && !has_whiteout(state))
			push_item(state, key.ino, wv->mount_id, ITEM_WHITEOUT, 0);
	} else if (state) {
		state->whiteout_removed = 1;
	}
	wv->nlink = nlink;
	return 0;
}

static __always_inline void on_write(__u32 dev, __u64 ino, __u64 copied)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct task_state *state = bpf_map_lookup_elem(&tasks, &id);

	if (!state) {
		struct inode_key key = { .dev = dev, .ino = ino };
		struct inflight *in;
		__u32 *mount_id;

		// Data copied into an earlier metadata-only copy-up, inside an
		// open: not a user write (those run in write syscalls).
		in = bpf_map_lookup_elem(&inflights, &id);
		if (!in || in->class != CLASS_OPEN)
			return;
		mount_id = bpf_map_lookup_elem(&metacopies, &key);
		if (!mount_id)
			return;
		state = state_for(id, dev);
		if (!state)
			return;
		push_item(state, ino, *mount_id, ITEM_DATA_FILL, 1);
		bpf_map_delete_elem(&metacopies, &key);
	}
	for (int i = 0; i < MAX_ITEMS; i++) {
		if (i >= state->nitems)
			break;
		if (state->items[i].ino == ino &&
		    (state->items[i].kind == ITEM_REG || state->items[i].kind == ITEM_DATA_FILL)) {
			state->items[i].bytes += copied;
			state->items[i].writes += 1;
			return;
		}
	}
	if (state->nitems < MAX_ITEMS) {
		// A write to another inode inside a tracked syscall: a metacopy
		// inode getting its data, when it is one.
		struct inode_key key = { .dev = dev, .ino = ino };
		__u32 *mount_id = bpf_map_lookup_elem(&metacopies, &key);

		if (mount_id) {
			__u32 n = state->nitems;

			push_item(state, ino, *mount_id, ITEM_DATA_FILL, 1);
			bpf_map_delete_elem(&metacopies, &key);
			if (n < MAX_ITEMS) {
				state->items[n].bytes = copied;
				state->items[n].writes = 1;
			}
		}
	}
}

// Classic ext4 tracepoints, read through their fixed record layouts (the
// tracefs `format` files; unchanged since 2.6, and checked by user space
// against the running kernel's before attaching: src/tpformat.rs). No
// CO-RE: they load where ext4 is a module, whose types live in module BTF
// that aya 0.14 does not relocate against.
struct ext4_write_end_rec {
	__u64 common;
	__u32 dev;
	__u32 pad;
	__u64 ino;
	__s64 pos;
	__u32 len;
	__u32 copied;
};

struct ext4_free_rec {
	__u64 common;
	__u32 dev;
	__u32 pad;
	__u64 ino;
	__u32 uid;
	__u32 gid;
	__u64 blocks;
	__u16 mode;
};

struct ext4_alloc_rec {
	__u64 common;
	__u32 dev;
	__u32 pad;
	__u64 ino;
	__u64 dir;
	__u16 mode;
};

struct ext4_dirty_rec {
	__u64 common;
	__u32 dev;
	__u32 pad;
	__u64 ino;
	__u64 ip;
};

SEC("tracepoint/ext4/ext4_da_write_end")
int ovl_da_write_end(struct ext4_write_end_rec *ctx)
{
	on_write(ctx->dev, ctx->ino, ctx->copied);
	return 0;
}

SEC("tracepoint/ext4/ext4_write_end")
int ovl_write_end(struct ext4_write_end_rec *ctx)
{
	on_write(ctx->dev, ctx->ino, ctx->copied);
	return 0;
}

SEC("tracepoint/ext4/ext4_journalled_write_end")
int ovl_journalled_write_end(struct ext4_write_end_rec *ctx)
{
	on_write(ctx->dev, ctx->ino, ctx->copied);
	return 0;
}

// A temporary freed inside the call (overlay's own checks,
// ovl_clear_empty) is not a copy-up.
static __always_inline void on_free(__u32 dev, __u64 ino)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct task_state *state;

	state = bpf_map_lookup_elem(&tasks, &id);
	if (!state)
		return;
	for (int i = 0; i < MAX_ITEMS; i++) {
		if (i >= state->nitems)
			break;
		if (state->items[i].ino == ino)
			state->items[i].freed = 1;
	}
}

SEC("tracepoint/ext4/ext4_free_inode")
int ovl_free_inode(struct ext4_free_rec *ctx)
{
	struct inode_key key = { .dev = ctx->dev, .ino = ctx->ino };

	if ((ctx->mode & S_IFMT) == S_IFCHR)
		bpf_map_delete_elem(&whiteouts, &key);
	on_free(ctx->dev, ctx->ino);
	return 0;
}

// Thread id -> overlay mount id of its vfs_rename with RENAME_WHITEOUT
// (filled by the hook rungs' vfs_rename programs, overlay_hooks.bpf.c).
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, __u32);
} rename_mounts SEC(".maps");

// ext4:ext4_allocate_inode as a classic tracepoint: the same logic as
// ovl_allocate_inode without its dentry walk. The hook rungs use it, and
// the tracepoint rung where tp_btf/ext4_allocate_inode cannot attach
// (ext4 a module). A RENAME_WHITEOUT's mount comes from the upper root,
// the hook rungs' vfs_rename (`rename_mounts`), a dir copied up while
// traced (`upper_dirs`), or the rename's own copy-up.
SEC("tracepoint/ext4/ext4_allocate_inode")
int ovl_hk_allocate_inode(struct ext4_alloc_rec *ctx)
{
	struct inode_key key = { .dev = ctx->dev, .ino = ctx->dir };
	__u64 id = bpf_get_current_pid_tgid();
	__u32 type = ctx->mode & S_IFMT;
	struct workdir_value *wd;
	struct task_state *state;
	struct inflight *in;
	__u16 kind;

	wd = bpf_map_lookup_elem(&workdirs, &key);
	if (!wd && type == S_IFDIR) {
		// An overlay being mounted: its first new dir is work/work.
		in = bpf_map_lookup_elem(&inflights, &id);
		if (in && in->class == CLASS_MOUNT && !in->registered) {
			struct inode_key wkey = { .dev = ctx->dev, .ino = ctx->ino };
			struct workdir_value value = { .metacopy = 1 };
			__u32 one = 1;
			__s64 *counter = bpf_map_lookup_elem(&lazy_outstanding, &one);

			if (counter) {
				value.mount_id = PENDING_BASE | (__u32)__sync_fetch_and_add(counter, 1);
				bpf_map_update_elem(&workdirs, &wkey, &value, BPF_NOEXIST);
				in->registered = 1;
			}
		}
		return 0;
	}
	if (!wd) {
		__u32 *found;
		__u32 mount_id = 0;

		if (type != S_IFCHR)
			return 0;
		in = bpf_map_lookup_elem(&inflights, &id);
		if (!in || in->class != CLASS_RENAME)
			return 0;
		found = bpf_map_lookup_elem(&uppers, &key);
		if (!found)
			found = bpf_map_lookup_elem(&rename_mounts, &id);
		if (!found)
			found = bpf_map_lookup_elem(&upper_dirs, &key);
		if (found)
			mount_id = *found;
		state = state_for(id, ctx->dev);
		if (!state)
			return 0;
		if (!mount_id && state->nitems > 0)
			mount_id = state->items[0].mount_id;
		push_item(state, ctx->ino, mount_id, ITEM_WHITEOUT, 0);
		return 0;
	}
	state = state_for(id, ctx->dev);
	if (!state)
		return 0;
	switch (type) {
	case S_IFREG:
		kind = ITEM_REG;
		break;
	case S_IFDIR:
		kind = ITEM_DIR;
		break;
	case S_IFCHR: {
		struct inode_key wkey = { .dev = ctx->dev, .ino = ctx->ino };
		struct whiteout_value wv = { .mount_id = wd->mount_id, .nlink = 1 };

		in = bpf_map_lookup_elem(&inflights, &id);
		if (in && in->class == CLASS_MOUNT)
			return 0;
		bpf_map_update_elem(&whiteouts, &wkey, &wv, BPF_ANY);
		kind = ITEM_WHITEOUT;
		break;
	}
	default:
		kind = ITEM_OTHER;
	}
	push_item(state, ctx->ino, wd->mount_id, kind, wd->metacopy);
	return 0;
}

// ext4:ext4_mark_inode_dirty as a classic tracepoint, where the tp_btf one
// cannot attach: no inode, so no i_nlink. The shared whiteout dirtied
// inside an unlink or rmdir is linked again (one more whiteout); inside an
// open, a create or a rename it loses a link (something is created or
// renamed over it; renames make their own whiteouts with RENAME_WHITEOUT,
// allocated). Whiteouts made before the overlay was registered are not
// recognised.
SEC("tracepoint/ext4/ext4_mark_inode_dirty")
int ovl_tp_mark_inode_dirty(struct ext4_dirty_rec *ctx)
{
	struct inode_key key = { .dev = ctx->dev, .ino = ctx->ino };
	__u64 id = bpf_get_current_pid_tgid();
	struct whiteout_value *wv;
	struct task_state *state;
	struct inflight *in;

	wv = bpf_map_lookup_elem(&whiteouts, &key);
	if (!wv)
		return 0;
	in = bpf_map_lookup_elem(&inflights, &id);
	if (!in)
		return 0;
	switch (in->class) {
	case CLASS_REMOVE:
		state = state_for(id, ctx->dev);
		if (state && !has_whiteout(state))
			push_item(state, ctx->ino, wv->mount_id, ITEM_WHITEOUT, 0);
		break;
	case CLASS_CREATE:
	case CLASS_OPEN:
	case CLASS_RENAME: // overlay renames onto a whiteout, never links one
		state = state_for(id, ctx->dev);
		if (state)
			state->whiteout_removed = 1;
		break;
	}
	return 0;
}

// ------------------------------------------------------------ page cache

struct pc_inode_value {
	__u64 added;   // pages
	__u64 deleted; // pages
};

struct pc_cgroup_key {
	__u32 dev;
	__u32 pad;
	__u64 ino;
	__u64 cgroup_id;
};

struct pc_cgroup_value {
	__u64 added; // pages this cgroup brought into the cache
	__u64 read;  // pages this cgroup read (hits and misses)
};

// Filesystems to account (user space registers the overlays' layer
// filesystems); `pc_all` set = every filesystem.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u32);
} pc_devs SEC(".maps");

const volatile __u32 pc_all = 0;

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct inode_key);
	__type(value, struct pc_inode_value);
} pc_inodes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct pc_cgroup_key);
	__type(value, struct pc_cgroup_value);
} pc_cgroups SEC(".maps");

static __always_inline int pc_tracked(__u32 dev)
{
	return pc_all || bpf_map_lookup_elem(&pc_devs, &dev);
}

SEC("tracepoint/filemap/mm_filemap_add_to_page_cache")
int ovl_pc_add(struct trace_event_raw_mm_filemap_op_page_cache *ctx)
{
	struct inode_key key = { .dev = ctx->s_dev, .ino = ctx->i_ino };
	struct pc_cgroup_key ckey = { .dev = ctx->s_dev, .ino = ctx->i_ino };
	struct pc_inode_value *iv, inew = {};
	struct pc_cgroup_value *cv, cnew = {};
	__u64 pages = 1ULL << (ctx->order & 31);

	if (!pc_tracked(ctx->s_dev))
		return 0;
	iv = bpf_map_lookup_elem(&pc_inodes, &key);
	if (iv) {
		__sync_fetch_and_add(&iv->added, pages);
	} else {
		inew.added = pages;
		if (bpf_map_update_elem(&pc_inodes, &key, &inew, BPF_NOEXIST)) {
			iv = bpf_map_lookup_elem(&pc_inodes, &key);
			if (iv)
				__sync_fetch_and_add(&iv->added, pages);
		}
	}
	ckey.cgroup_id = bpf_get_current_cgroup_id();
	cv = bpf_map_lookup_elem(&pc_cgroups, &ckey);
	if (cv) {
		__sync_fetch_and_add(&cv->added, pages);
	} else {
		cnew.added = pages;
		if (bpf_map_update_elem(&pc_cgroups, &ckey, &cnew, BPF_NOEXIST)) {
			cv = bpf_map_lookup_elem(&pc_cgroups, &ckey);
			if (cv)
				__sync_fetch_and_add(&cv->added, pages);
		}
	}
	return 0;
}

SEC("tracepoint/filemap/mm_filemap_delete_from_page_cache")
int ovl_pc_delete(struct trace_event_raw_mm_filemap_op_page_cache *ctx)
{
	struct inode_key key = { .dev = ctx->s_dev, .ino = ctx->i_ino };
	struct pc_inode_value *iv;

	if (!pc_tracked(ctx->s_dev))
		return 0;
	iv = bpf_map_lookup_elem(&pc_inodes, &key);
	if (iv)
		__sync_fetch_and_add(&iv->deleted, 1ULL << (ctx->order & 31));
	return 0;
}

SEC("tracepoint/filemap/mm_filemap_get_pages")
int ovl_pc_read(struct trace_event_raw_mm_filemap_op_page_cache_range *ctx)
{
	struct pc_cgroup_key ckey = { .dev = ctx->s_dev, .ino = ctx->i_ino };
	struct pc_cgroup_value *cv, cnew = {};
	__u64 pages;

	if (!pc_tracked(ctx->s_dev))
		return 0;
	pages = ctx->last_index >= ctx->index ? ctx->last_index - ctx->index + 1 : 0;
	ckey.cgroup_id = bpf_get_current_cgroup_id();
	cv = bpf_map_lookup_elem(&pc_cgroups, &ckey);
	if (cv) {
		__sync_fetch_and_add(&cv->read, pages);
	} else {
		cnew.read = pages;
		if (bpf_map_update_elem(&pc_cgroups, &ckey, &cnew, BPF_NOEXIST)) {
			cv = bpf_map_lookup_elem(&pc_cgroups, &ckey);
			if (cv)
				__sync_fetch_and_add(&cv->read, pages);
		}
	}
	return 0;
}

// ------------------------------------------------------------ xfs
//
// An upper dir on xfs (ftype=1, Docker's usual overlay2 backing). xfs has
// no allocate-inode tracepoint; the same facts come from its directory and
// unlinked-list tracepoints (tp_btf: the record has no file type):
//   - a dir entry added in a registered workdir (xfs_dir2_*_addname, with
//     args->filetype) = ext4_allocate_inode in it: dir copy-up, temp dir of
//     a create over a whiteout, the shared whiteout made (chrdev) or linked
//     again (the same inode, linked: one more whiteout);
//   - an O_TMPFILE inode (regular-file copy-ups: xfs_iunlink of an inode
//     with no dentry yet) is pending until it is linked (xfs_iunlink_remove)
//     while its tmpfile dentry sits in a registered workdir; a whiteout
//     inode of RENAME_WHITEOUT (also O_TMPFILE-like, never in a dir)
//     takes the mount of the rename's source dir (xfs_rename);
//   - a registered whiteout's entry removed (xfs_dir2_*_removename), or an
//     entry of the upper replaced by an inode this syscall made
//     (xfs_dir2_*_replace): something created over a whiteout;
//   - bytes: xfs:xfs_file_buffered_write (the splice of overlay's copy)
//     and xfs:xfs_reflink_remap_range (overlay clones first when lower and
//     upper share a reflink xfs: the whole length is one remap);
//   - xfs:xfs_destroy_inode of an inode made in the call: a temporary.
// The classic records are read through fixed layouts (checked by user
// space); the tp_btf programs need xfs in vmlinux BTF (built in).

#define XFS_DIR3_FT_REG_FILE 1
#define XFS_DIR3_FT_DIR 2
#define XFS_DIR3_FT_CHRDEV 3

static __always_inline struct inode *xfs_vfs(struct xfs_inode *ip)
{
	return (struct inode *)__builtin_preserve_access_index(&ip->i_vnode);
}

// Only filesystems holding a registered overlay's layers are looked at.
static __always_inline int overlay_dev(__u32 dev)
{
	return bpf_map_lookup_elem(&pc_devs, &dev) != 0;
}

SEC("tp_btf/xfs_iunlink")
int BPF_PROG(ovl_xfs_iunlink, struct xfs_inode *ip)
{
	struct inode *inode = xfs_vfs(ip);
	__u64 id = bpf_get_current_pid_tgid();
	struct task_state *state;
	struct inflight *in;
	__u32 dev, n;
	__u16 kind;

	in = bpf_map_lookup_elem(&inflights, &id);
	if (!in || in->class == CLASS_MOUNT || in->class == CLASS_LAZY)
		return 0;
	// A last unlink: the inode still has its dentry.
	if (BPF_CORE_READ(inode, i_dentry.first))
		return 0;
	dev = BPF_CORE_READ(inode, i_sb, s_dev);
	if (!overlay_dev(dev))
		return 0;
	switch (BPF_CORE_READ(inode, i_mode) & S_IFMT) {
	case S_IFREG:
		kind = ITEM_REG;
		break;
	case S_IFCHR:
		kind = ITEM_WHITEOUT;
		break;
	default:
		kind = ITEM_OTHER;
	}
	state = state_for(id, dev);
	if (!state)
		return 0;
	n = state->nitems;
	push_item(state, BPF_CORE_READ(inode, i_ino), 0, kind, 0);
	if (n < MAX_ITEMS && state->nitems > n)
		state->items[n].pending = 1;
	return 0;
}

SEC("tp_btf/xfs_iunlink_remove")
int BPF_PROG(ovl_xfs_iunlink_remove, struct xfs_inode *ip)
{
	struct inode *inode = xfs_vfs(ip);
	__u64 id = bpf_get_current_pid_tgid();
	struct task_state *state = bpf_map_lookup_elem(&tasks, &id);
	struct hlist_node *first;
	struct item *item = 0;
	__u64 ino;

	if (!state)
		return 0;
	ino = BPF_CORE_READ(inode, i_ino);
	for (int i = 0; i < MAX_ITEMS; i++) {
		if (i >= state->nitems)
			break;
		if (state->items[i].pending && state->items[i].ino == ino) {
			item = &state->items[i];
			break;
		}
	}
	if (!item)
		return 0;
	first = BPF_CORE_READ(inode, i_dentry.first);
	if (first) {
		// Linked from its tmpfile dentry: a copy-up when that is in a
		// registered workdir.
		struct dentry *dentry = container_of(first, struct dentry, d_u.d_alias);
		struct inode_key key = { .dev = state->dev };
		struct workdir_value *wd;

		key.ino = BPF_CORE_READ(dentry, d_parent, d_inode, i_ino);
		wd = bpf_map_lookup_elem(&workdirs, &key);
		if (wd) {
			item->mount_id = wd->mount_id;
			item->metacopy = wd->metacopy;
			item->pending = 0;
			return 0;
		}
	} else if (item->kind == ITEM_WHITEOUT) {
		struct inflight *in = bpf_map_lookup_elem(&inflights, &id);

		// RENAME_WHITEOUT: xfs links its whiteout in the rename.
		if (in && in->class == CLASS_RENAME) {
			__u32 mount_id = state->rename_mount;

			if (!mount_id && state->nitems > 0)
				mount_id = state->items[0].mount_id;
			item->mount_id = mount_id;
			item->pending = 0;
			return 0;
		}
	}
	item->freed = 1;
	return 0;
}

SEC("tp_btf/xfs_rename")
int BPF_PROG(ovl_xfs_rename, struct xfs_inode *src_dp, struct xfs_inode *target_dp,
	     struct xfs_name *src_name, struct xfs_name *target_name)
{
	struct inode *dir = xfs_vfs(src_dp);
	__u64 id = bpf_get_current_pid_tgid();
	struct task_state *state;
	struct inflight *in;
	__u32 dev, mount_id;

	in = bpf_map_lookup_elem(&inflights, &id);
	if (!in || in->class != CLASS_RENAME)
		return 0;
	dev = BPF_CORE_READ(dir, i_sb, s_dev);
	if (!overlay_dev(dev))
		return 0;
	mount_id = upper_mount_of(dir, dev);
	if (!mount_id)
		return 0;
	state = state_for(id, dev);
	if (state)
		state->rename_mount = mount_id;
	return 0;
}

static __always_inline void xfs_entry_added(struct xfs_da_args *args)
{
	struct xfs_inode *dp = BPF_CORE_READ(args, dp);
	struct inode *dir = xfs_vfs(dp);
	__u64 id = bpf_get_current_pid_tgid();
	__u64 child = BPF_CORE_READ(args, inumber);
	__u8 ft = BPF_CORE_READ(args, filetype);
	struct inode_key key = {};
	struct workdir_value *wd;
	struct task_state *state;
	struct inflight *in;
	__u16 kind;

	key.dev = BPF_CORE_READ(dir, i_sb, s_dev);
	key.ino = BPF_CORE_READ(dir, i_ino);
	wd = bpf_map_lookup_elem(&workdirs, &key);
	in = bpf_map_lookup_elem(&inflights, &id);
	if (!wd) {
		// An overlay being mounted: its first new dir is work/work.
		if (ft == XFS_DIR3_FT_DIR && in && in->class == CLASS_MOUNT && !in->registered) {
			struct inode_key wkey = { .dev = key.dev, .ino = child };
			struct workdir_value value = { .metacopy = 1 };
			__u32 one = 1;
			__s64 *counter = bpf_map_lookup_elem(&lazy_outstanding, &one);

			if (counter) {
				value.mount_id = PENDING_BASE | (__u32)__sync_fetch_and_add(counter, 1);
				bpf_map_update_elem(&workdirs, &wkey, &value, BPF_NOEXIST);
				in->registered = 1;
			}
		}
		return;
	}
	if (in && in->class == CLASS_MOUNT)
		return;
	state = state_for(id, key.dev);
	if (!state || has_item(state, child))
		return;
	switch (ft) {
	case XFS_DIR3_FT_REG_FILE:
		kind = ITEM_REG;
		break;
	case XFS_DIR3_FT_DIR:
		kind = ITEM_DIR;
		break;
	case XFS_DIR3_FT_CHRDEV: {
		// The shared whiteout, made or linked again.
		struct inode_key wkey = { .dev = key.dev, .ino = child };
		struct whiteout_value wv = { .mount_id = wd->mount_id, .nlink = 1 };

		bpf_map_update_elem(&whiteouts, &wkey, &wv, BPF_NOEXIST);
		if (!has_whiteout(state))
			push_item(state, child, wd->mount_id, ITEM_WHITEOUT, 0);
		return;
	}
	default:
		kind = ITEM_OTHER;
	}
	push_item(state, child, wd->mount_id, kind, wd->metacopy);
}

static __always_inline void xfs_entry_removed(struct xfs_da_args *args)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct task_state *state = bpf_map_lookup_elem(&tasks, &id);
	struct inode_key key = {};

	if (!state)
		return;
	key.dev = state->dev;
	key.ino = BPF_CORE_READ(args, inumber);
	if (bpf_map_lookup_elem(&whiteouts, &key))
		state->whiteout_removed = 1;
}

static __always_inline void xfs_entry_replaced(struct xfs_da_args *args)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct task_state *state = bpf_map_lookup_elem(&tasks, &id);
	struct xfs_inode *dp;
	struct inode_key key = {};
	__u64 child;

	if (!state)
		return;
	// ".." of a dir moved out of the workdir.
	if (BPF_CORE_READ(args, namelen) == 2) {
		char name[2] = {};
		const __u8 *p = BPF_CORE_READ(args, name);

		bpf_probe_read_kernel(name, sizeof(name), p);
		if (name[0] == '.' && name[1] == '.')
			return;
	}
	dp = BPF_CORE_READ(args, dp);
	key.dev = state->dev;
	key.ino = BPF_CORE_READ(dp, i_ino);
	if (bpf_map_lookup_elem(&workdirs, &key))
		return; // the workdir side of an exchange
	child = BPF_CORE_READ(args, inumber);
	for (int i = 0; i < MAX_ITEMS; i++) {
		if (i >= state->nitems)
			break;
		if (state->items[i].ino == child && !state->items[i].freed &&
		    (state->items[i].kind == ITEM_REG || state->items[i].kind == ITEM_DIR ||
		     state->items[i].kind == ITEM_OTHER)) {
			state->whiteout_removed = 1;
			return;
		}
	}
}

#define XFS_DA_PROG(fn, event, handler)                        \
	SEC("tp_btf/" #event)                                  \
	int BPF_PROG(fn, struct xfs_da_args *args)             \
	{                                                      \
		handler(args);                                 \
		return 0;                                      \
	}

XFS_DA_PROG(ovl_xfs_sf_addname, xfs_dir2_sf_addname, xfs_entry_added)
XFS_DA_PROG(ovl_xfs_block_addname, xfs_dir2_block_addname, xfs_entry_added)
XFS_DA_PROG(ovl_xfs_leaf_addname, xfs_dir2_leaf_addname, xfs_entry_added)
XFS_DA_PROG(ovl_xfs_node_addname, xfs_dir2_node_addname, xfs_entry_added)
XFS_DA_PROG(ovl_xfs_sf_removename, xfs_dir2_sf_removename, xfs_entry_removed)
XFS_DA_PROG(ovl_xfs_block_removename, xfs_dir2_block_removename, xfs_entry_removed)
XFS_DA_PROG(ovl_xfs_leaf_removename, xfs_dir2_leaf_removename, xfs_entry_removed)
XFS_DA_PROG(ovl_xfs_node_removename, xfs_dir2_node_removename, xfs_entry_removed)
XFS_DA_PROG(ovl_xfs_sf_replace, xfs_dir2_sf_replace, xfs_entry_replaced)
XFS_DA_PROG(ovl_xfs_block_replace, xfs_dir2_block_replace, xfs_entry_replaced)
XFS_DA_PROG(ovl_xfs_leaf_replace, xfs_dir2_leaf_replace, xfs_entry_replaced)
XFS_DA_PROG(ovl_xfs_node_replace, xfs_dir2_node_replace, xfs_entry_replaced)

// xfs:xfs_file_buffered_write, xfs:xfs_reflink_remap_range and
// xfs:xfs_destroy_inode records (tracefs `format`).
struct xfs_file_rec {
	__u64 common;
	__u32 dev;
	__u32 pad;
	__u64 ino;
	__s64 size;
	__s64 offset;
	__u64 count;
};

struct xfs_remap_rec {
	__u64 common;
	__u32 dev;
	__u32 pad;
	__u64 src_ino;
	__s64 src_isize;
	__s64 src_disize;
	__s64 src_offset;
	__s64 len;
	__u64 dest_ino;
};

struct xfs_inode_rec {
	__u64 common;
	__u32 dev;
	__u32 pad;
	__u64 ino;
};

SEC("tracepoint/xfs/xfs_file_buffered_write")
int ovl_xfs_buffered_write(struct xfs_file_rec *ctx)
{
	on_write(ctx->dev, ctx->ino, ctx->count);
	return 0;
}

SEC("tracepoint/xfs/xfs_reflink_remap_range")
int ovl_xfs_remap(struct xfs_remap_rec *ctx)
{
	if (ctx->len > 0)
		on_write(ctx->dev, ctx->dest_ino, ctx->len);
	return 0;
}

SEC("tracepoint/xfs/xfs_destroy_inode")
int ovl_xfs_destroy_inode(struct xfs_inode_rec *ctx)
{
	struct inode_key key = { .dev = ctx->dev, .ino = ctx->ino };

	bpf_map_delete_elem(&whiteouts, &key);
	on_free(ctx->dev, ctx->ino);
	return 0;
}
