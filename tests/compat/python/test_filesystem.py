"""File operations through the official SDK."""

import hashlib
import os

import pytest
from daytona import DaytonaError, DaytonaNotFoundError


def test_upload_download_roundtrip_binary(sandbox):
    for size in (0, 1, 64 * 1024 + 1, 5 * 1024 * 1024):
        data = os.urandom(size)
        sandbox.fs.upload_file(data, f"/tmp/blob-{size}.bin")
        back = sandbox.fs.download_file(f"/tmp/blob-{size}.bin")
        assert hashlib.sha256(back).hexdigest() == hashlib.sha256(data).hexdigest()


def test_upload_creates_parents_owned_by_user(sandbox):
    sandbox.fs.upload_file(b"nested\n", "/home/daytona/a/b/c/file.txt")
    info = sandbox.fs.get_file_info("/home/daytona/a/b/c/file.txt")
    assert info.size == 7
    assert not info.is_dir
    assert info.permissions == "0644"
    assert info.owner == "1000"
    assert sandbox.fs.get_file_info("/home/daytona/a").owner == "1000"


def test_upload_relative_path_is_in_work_dir(sandbox):
    sandbox.fs.upload_file(b"relative\n", "relative.txt")
    assert sandbox.process.exec("cat /home/daytona/relative.txt").result == "relative\n"


def test_list_files(sandbox):
    sandbox.fs.create_folder("/tmp/listing", "755")
    sandbox.fs.upload_file(b"1", "/tmp/listing/one")
    sandbox.fs.create_folder("/tmp/listing/sub", "700")
    entries = {entry.name: entry for entry in sandbox.fs.list_files("/tmp/listing")}
    assert set(entries) == {"one", "sub"}
    assert entries["sub"].is_dir
    assert entries["sub"].permissions == "0700"
    assert entries["one"].size == 1


def test_create_folder_and_info(sandbox):
    sandbox.fs.create_folder("/tmp/made/deep", "750")
    info = sandbox.fs.get_file_info("/tmp/made/deep")
    assert info.is_dir
    assert info.permissions == "0750"


def test_delete_file_and_folder(sandbox):
    sandbox.fs.upload_file(b"x", "/tmp/delete-me/file")
    sandbox.fs.delete_file("/tmp/delete-me/file")
    with pytest.raises(DaytonaNotFoundError):
        sandbox.fs.get_file_info("/tmp/delete-me/file")
    sandbox.fs.upload_file(b"x", "/tmp/delete-me/file2")
    sandbox.fs.delete_file("/tmp/delete-me", recursive=True)
    with pytest.raises(DaytonaNotFoundError):
        sandbox.fs.get_file_info("/tmp/delete-me")


def test_download_missing_is_not_found(sandbox):
    with pytest.raises(DaytonaNotFoundError):
        sandbox.fs.download_file("/tmp/does-not-exist")


def test_upload_onto_directory_is_rejected(sandbox):
    sandbox.fs.create_folder("/tmp/a-directory", "755")
    with pytest.raises(DaytonaError):
        sandbox.fs.upload_file(b"x", "/tmp/a-directory")
    assert sandbox.fs.get_file_info("/tmp/a-directory").is_dir


def test_overwrite_keeps_mode(sandbox):
    sandbox.fs.upload_file(b"#!/bin/sh\necho one\n", "/tmp/script.sh")
    sandbox.process.exec("chmod 755 /tmp/script.sh")
    sandbox.fs.upload_file(b"#!/bin/sh\necho two\n", "/tmp/script.sh")
    assert sandbox.fs.get_file_info("/tmp/script.sh").permissions == "0755"
    assert sandbox.process.exec("/tmp/script.sh").result == "two\n"
