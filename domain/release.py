"""Release builds: their rows (release_builds, repo_builds) and the package (archive + SHA256SUMS)."""

from __future__ import annotations

import gzip
import hashlib
import tarfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from domain.models import BuildStatus, ReleaseBuild, RepoBuild


def start_release(
    session: Session, tag: str, name: str | None, prerelease: bool, repositories: list[str], run_id: str
) -> str:
    """The release's row (reused when the tag was started before: a resumed release) and one row per
    repository; returns the release id."""
    release = session.scalars(select(ReleaseBuild).where(ReleaseBuild.tag == tag).with_for_update()).one_or_none()
    if release is None:
        release = ReleaseBuild(tag=tag, name=name or tag, prerelease=prerelease, repositories=repositories)
        session.add(release)
        session.flush()
    release.status, release.dagster_run_id, release.error = BuildStatus.RUNNING.value, run_id, None
    release.repositories = sorted(set(release.repositories or []) | set(repositories))
    existing = set(session.scalars(select(RepoBuild.repository).where(RepoBuild.release_build_id == release.id)))
    for repository in repositories:
        if repository not in existing:
            session.add(RepoBuild(release_build_id=release.id, repository=repository))
    session.flush()
    return release.id


def repo_build(session: Session, release_id: str, repository: str) -> RepoBuild:
    return session.scalars(
        select(RepoBuild)
        .where(RepoBuild.release_build_id == release_id, RepoBuild.repository == repository)
        .with_for_update()
    ).one()


def update_repo_build(session: Session, release_id: str, repository: str, **values: Any) -> None:
    row = repo_build(session, release_id, repository)
    for key, value in values.items():
        setattr(row, key, value)
    row.updated_at = datetime.now(UTC)


def finish_release(session: Session, release_id: str, status: BuildStatus, **values: Any) -> None:
    release = session.get(ReleaseBuild, release_id)
    assert release is not None
    release.status = status.value
    for key, value in values.items():
        setattr(release, key, value)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def package(release_dir: Path, tag: str, artifact_paths: list[Path]) -> dict[str, Path]:
    """One archive of every artifact (organised by repository) and SHA256SUMS in `sha256sum -c` format."""
    out = release_dir / "dist"
    out.mkdir(parents=True, exist_ok=True)
    archive = out / f"release-{tag}.tar.gz"
    # Reproducible: the same artifacts give the same bytes, so a re-run's publish sees the same checksum.
    with gzip.GzipFile(archive, "wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for path in sorted(artifact_paths):
            info = tar.gettarinfo(str(path), arcname=str(path.relative_to(release_dir / "artifacts")))
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            with path.open("rb") as handle:
                tar.addfile(info, handle)
    sums = out / "SHA256SUMS"
    sums.write_text(f"{sha256_file(archive)}  {archive.name}\n")
    return {"archive": archive, "sha256sums": sums}


def release_notes(session: Session, release_id: str) -> str:
    rows = session.scalars(
        select(RepoBuild).where(RepoBuild.release_build_id == release_id).order_by(RepoBuild.repository)
    ).all()
    lines = ["Built repositories:", ""]
    lines += [
        f"- {r.repository}: run {r.github_run_id} {r.github_run_url or ''}".rstrip()
        for r in rows
        if r.status == BuildStatus.SUCCEEDED.value
    ]
    return "\n".join(lines) + "\n"


def sign(sums: Path, key_path: Path) -> Path:
    """A detached Ed25519 signature of SHA256SUMS (raw 64 bytes) in SHA256SUMS.sig."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("RELEASE_SIGNING_KEY must be an Ed25519 private key (PEM)")
    signature = sums.with_name(sums.name + ".sig")
    signature.write_bytes(key.sign(sums.read_bytes()))
    return signature
