// SPDX-License-Identifier: GPL-2.0
//
// overlay_hooks.bpf.c: the "fentry" and "kprobe" rungs of the strategy
// ladder. Everything of bpf/overlay_trace.bpf.c (maps, syscall unit, upper
// inode tracking, classification at sys_exit, page cache) is included as
// is, so user space, the event layout and the registry are the same; what
// changes is where copied-up bytes come from. Instead of summing the
// upper filesystem's write_end tracepoints (ext4 only, blind to clones and
// to copy_file_range on xfs/btrfs), the bytes are taken from overlay's own
// data copy, filtered to the inodes this syscall allocated in an overlay
// workdir (or a metacopy inode getting its data):
//   - kprobe rung: kprobe + kretprobe on overlay's
//     `ovl_copy_up_file(ofs, dentry, struct file *new_file, loff_t len)`
//     (a module function: kprobes attach by name; 6.1 and later keep
//     new_file and len as the third and fourth arguments), counted when it
//     returns 0;
//   - fentry rung: fexit on the vmlinux functions ovl_copy_up_file calls,
//     `do_splice_direct` (return = bytes spliced) and `do_clone_file_range`
//     (return = bytes cloned): aya 0.14 resolves fentry targets in vmlinux
//     BTF only (it never passes a module's BTF object fd), so overlay's own
//     functions are out of reach of its fentry programs.
// The upper inode side is filesystem-module safe in both rungs: where ext4
// is a module (Debian), its types live in module BTF, which aya 0.14
// neither relocates against nor attaches to, so the included tp_btf
// ext4 programs cannot load there. Both rungs use instead:
//   - ext4:ext4_allocate_inode and ext4:ext4_free_inode as classic
//     tracepoints read through the tracepoints' fixed record layout (no
//     CO-RE): ovl_hk_allocate_inode and ovl_free_inode, included;
//   - the shared whiteout linked again (vfs_link of a registered whiteout
//     into an overlay workdir) and a whiteout removed (vfs_unlink of a
//     char 0/0 after a dir was exchanged over it, or vfs_rename of a new
//     non-dir onto it: how overlay creates over a whiteout) instead
//     of ext4_mark_inode_dirty's nlink: kprobes in the kprobe rung,
//     fentry in the fentry rung (vmlinux functions).
// User space attaches the included syscall, page cache and exit programs,
// then the programs of one rung.

#include "overlay_trace.bpf.c"

struct copy_arg {
	__u32 dev;
	__u32 pad;
	__u64 ino;
	__u64 len;
};

// Thread id -> the ovl_copy_up_file call in progress (kprobe rung).
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct copy_arg);
} copy_args SEC(".maps");

// Copied bytes into `file`, when the calling thread is in a tracked
// syscall (on_write filters to the syscall's own copy-up inodes).
static __always_inline void copied_into(struct file *file, __u64 bytes)
{
	struct inode *inode = BPF_CORE_READ(file, f_inode);
	__u32 dev = BPF_CORE_READ(inode, i_sb, s_dev);
	__u64 ino = BPF_CORE_READ(inode, i_ino);

	// do_splice_direct moves at most 1 MiB per call for overlay, and a
	// clone is counted up to 4 GiB - 1 (on_write takes a u32).
	on_write(dev, ino, bytes > 0xffffffffULL ? 0xffffffffU : (__u32)bytes);
}

// ------------------------------------------------------------ kprobe rung

SEC("kprobe/ovl_copy_up_file")
int BPF_KPROBE(ovl_kp_copy_file, void *ofs, void *dentry, struct file *new_file, __s64 len)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct inode *inode = BPF_CORE_READ(new_file, f_inode);
	struct copy_arg arg = {};

	if (!bpf_map_lookup_elem(&inflights, &id) || len <= 0)
		return 0;
	arg.dev = BPF_CORE_READ(inode, i_sb, s_dev);
	arg.ino = BPF_CORE_READ(inode, i_ino);
	arg.len = len;
	bpf_map_update_elem(&copy_args, &id, &arg, BPF_ANY);
	return 0;
}

SEC("kretprobe/ovl_copy_up_file")
int BPF_KRETPROBE(ovl_kp_copy_file_ret, int ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct copy_arg *arg = bpf_map_lookup_elem(&copy_args, &id);
	__u64 left;

	if (!arg)
		return 0;
	if (ret == 0) {
		// on_write takes a u32: files up to 8 GiB - 2 are exact.
		left = arg->len;
		for (int i = 0; i < 2 && left; i++) {
			__u32 chunk = left > 0xffffffffULL ? 0xffffffffU : (__u32)left;

			on_write(arg->dev, arg->ino, chunk);
			left -= chunk;
		}
	}
	bpf_map_delete_elem(&copy_args, &id);
	return 0;
}

// ------------------------------------------------------------ fentry rung

SEC("fexit/do_splice_direct")
int BPF_PROG(ovl_fx_splice, struct file *in, loff_t *ppos, struct file *out, loff_t *opos,
	     size_t len, unsigned int flags, long ret)
{
	__u64 id = bpf_get_current_pid_tgid();

	if (ret <= 0 || !bpf_map_lookup_elem(&inflights, &id))
		return 0;
	copied_into(out, ret);
	return 0;
}

SEC("fexit/do_clone_file_range")
int BPF_PROG(ovl_fx_clone, struct file *file_in, loff_t pos_in, struct file *file_out,
	     loff_t pos_out, loff_t len, unsigned int remap_flags, loff_t ret)
{
	__u64 id = bpf_get_current_pid_tgid();

	if (ret <= 0 || !bpf_map_lookup_elem(&inflights, &id))
		return 0;
	copied_into(file_out, ret);
	return 0;
}

// ------------------------------------------------------------ both rungs

#define RENAME_EXCHANGE (1 << 1)
#define RENAME_WHITEOUT (1 << 2)

// vfs_link(old_dentry, idmap, dir, new_dentry, delegated): overlay links
// its shared whiteout into the workdir for every whiteout after the first.
static __always_inline void on_link(struct dentry *old)
{
	struct inode *inode = BPF_CORE_READ(old, d_inode);
	struct inode_key key = {};
	struct whiteout_value *wv;
	struct task_state *state;
	__u64 id = bpf_get_current_pid_tgid();

	if (!inode)
		return;
	key.dev = BPF_CORE_READ(inode, i_sb, s_dev);
	key.ino = BPF_CORE_READ(inode, i_ino);
	wv = bpf_map_lookup_elem(&whiteouts, &key);
	if (!wv)
		return;
	state = state_for(id, key.dev);
	if (state && !has_whiteout(state))
		push_item(state, key.ino, wv->mount_id, ITEM_WHITEOUT, 0);
}

// vfs_unlink(idmap, dir, dentry, delegated) of a whiteout: something was
// created over it (overlay exchanges the new object in, then unlinks).
static __always_inline void on_unlink(struct dentry *dentry)
{
	struct inode *inode = BPF_CORE_READ(dentry, d_inode);
	struct task_state *state;
	__u64 id = bpf_get_current_pid_tgid();
	umode_t mode;

	if (!inode)
		return;
	mode = BPF_CORE_READ(inode, i_mode);
	if ((mode & S_IFMT) != S_IFCHR || BPF_CORE_READ(inode, i_rdev) != 0)
		return;
	state = bpf_map_lookup_elem(&tasks, &id);
	if (state)
		state->whiteout_removed = 1;
}

SEC("kprobe/vfs_link")
int BPF_KPROBE(ovl_kp_link, struct dentry *old_dentry)
{
	on_link(old_dentry);
	return 0;
}

SEC("kprobe/vfs_unlink")
int BPF_KPROBE(ovl_kp_unlink, void *idmap, struct inode *dir, struct dentry *dentry)
{
	on_unlink(dentry);
	return 0;
}

SEC("fentry/vfs_link")
int BPF_PROG(ovl_fe_link, struct dentry *old_dentry)
{
	on_link(old_dentry);
	return 0;
}

SEC("fentry/vfs_unlink")
int BPF_PROG(ovl_fe_unlink, void *idmap, struct inode *dir, struct dentry *dentry)
{
	on_unlink(dentry);
	return 0;
}

// vfs_rename(struct renamedata *rd): a whiteout overwritten (something
// created over it), and for RENAME_WHITEOUT (only overlay asks for it) the
// upper mount from rd->old_dentry's ancestors. `old_dentry`, `new_dentry`
// and `flags` are in every version of the struct (6.1 has old_dir, 6.17+
// old_parent: neither is read).
static __always_inline void on_rename(struct renamedata *rd)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct dentry *dentry;
	struct inode_key key = {};
	__u32 mount_id = 0;

	__u32 flags = BPF_CORE_READ(rd, flags);
	struct inode *target;

	if (!bpf_map_lookup_elem(&inflights, &id))
		return;
	// A non-dir created over a whiteout is renamed from the workdir
	// onto it (no exchange): the whiteout goes.
	target = BPF_CORE_READ(rd, new_dentry, d_inode);
	if (target && !(flags & RENAME_EXCHANGE) &&
	    (BPF_CORE_READ(target, i_mode) & S_IFMT) == S_IFCHR &&
	    BPF_CORE_READ(target, i_rdev) == 0) {
		struct task_state *state = bpf_map_lookup_elem(&tasks, &id);

		if (state)
			state->whiteout_removed = 1;
	}
	if (!(flags & RENAME_WHITEOUT))
		return;
	dentry = BPF_CORE_READ(rd, old_dentry);
	key.dev = BPF_CORE_READ(dentry, d_sb, s_dev);
	for (int i = 0; i < 16 && dentry; i++) {
		__u32 *found;
		struct dentry *parent;

		key.ino = BPF_CORE_READ(dentry, d_inode, i_ino);
		found = bpf_map_lookup_elem(&uppers, &key);
		if (found) {
			mount_id = *found;
			break;
		}
		parent = BPF_CORE_READ(dentry, d_parent);
		if (parent == dentry)
			break;
		dentry = parent;
	}
	if (mount_id)
		bpf_map_update_elem(&rename_mounts, &id, &mount_id, BPF_ANY);
	else
		bpf_map_delete_elem(&rename_mounts, &id);
}

SEC("kprobe/vfs_rename")
int BPF_KPROBE(ovl_kp_rename, struct renamedata *rd)
{
	on_rename(rd);
	return 0;
}

SEC("fentry/vfs_rename")
int BPF_PROG(ovl_fe_rename, struct renamedata *rd)
{
	on_rename(rd);
	return 0;
}
