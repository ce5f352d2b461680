"""The rootfs cache drops older recipes' root filesystems, never one a host stands on."""

import subprocess

from gpufleet.lab import rootfs


def make_rootfs(cache, digest):
    path = cache / f"rootfs-{rootfs.SUITE}-{digest}"
    (path / "etc").mkdir(parents=True)
    return path


def test_an_older_rootfs_still_mounted_as_a_lower_dir_is_kept(tmp_path):
    cache = tmp_path / "cache"
    current, in_use, unused = (make_rootfs(cache, d) for d in ("new", "old1", "old2"))
    upper, work, merged = (tmp_path / d for d in ("upper", "work", "merged"))
    for directory in (upper, work, merged):
        directory.mkdir()
    options = f"lowerdir={in_use},upperdir={upper},workdir={work}"
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, str(merged)], check=True)
    try:
        rootfs._remove_stale_rootfs(cache, keep=current)
        assert current.exists() and in_use.exists()
        assert not unused.exists()
    finally:
        subprocess.run(["umount", str(merged)], check=True)
    rootfs._remove_stale_rootfs(cache, keep=current)
    assert not in_use.exists() and current.exists()
