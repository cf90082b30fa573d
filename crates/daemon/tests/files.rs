//! `/files/*`.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use common::{Daemon, Multipart, assert_error_shape, sha256_file, streamed, wait_for};
use futures_util::StreamExt;
use hyper::StatusCode;
use serde_json::{Value, json};

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn temp_files_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(".daytona-upload-"))
        .collect()
}

fn current_uid() -> String {
    nix::unistd::geteuid().as_raw().to_string()
}

#[tokio::test]
async fn list_describes_entries_sorted_by_name() {
    let daemon = Daemon::start().await;
    let home = &daemon.home;
    std::fs::write(home.join("b.txt"), "hello").unwrap();
    std::fs::set_permissions(home.join("b.txt"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::create_dir(home.join("a-dir")).unwrap();
    std::fs::set_permissions(home.join("a-dir"), std::fs::Permissions::from_mode(0o755)).unwrap();
    symlink("b.txt", home.join("c-link")).unwrap();

    let reply = daemon.get("/files?path=.").await;
    assert_eq!(reply.status, StatusCode::OK);
    let entries = reply.json();
    let entries = entries.as_array().unwrap();
    let names: Vec<&str> = entries
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a-dir", "b.txt", "c-link"]);

    let dir = &entries[0];
    assert_eq!(dir["isDir"], true);
    assert_eq!(dir["mode"], "drwxr-xr-x");
    assert_eq!(dir["permissions"], "0755");

    let file = &entries[1];
    assert_eq!(file["isDir"], false);
    assert_eq!(file["size"], 5);
    assert!(file["size"].is_u64());
    assert_eq!(file["mode"], "-rw-r-----");
    assert_eq!(file["permissions"], "0640");
    assert_eq!(file["owner"], current_uid());
    assert!(file["group"].as_str().unwrap().parse::<u32>().is_ok());
    assert_eq!(file["path"], format!("{}/b.txt", home.display()));
    let mod_time = file["modTime"].as_str().unwrap();
    assert!(mod_time.ends_with(" +0000 UTC"), "{mod_time}");
    let modified_at = file["modifiedAt"].as_str().unwrap();
    assert!(
        time::OffsetDateTime::parse(modified_at, &time::format_description::well_known::Rfc3339)
            .is_ok(),
        "{modified_at}"
    );

    assert_eq!(
        entries[2]["mode"].as_str().unwrap().chars().next(),
        Some('L')
    );
}

#[tokio::test]
async fn list_without_path_lists_work_dir() {
    let daemon = Daemon::start().await;
    std::fs::write(daemon.home.join("only.txt"), "").unwrap();
    let entries = daemon.get("/files").await.json();
    assert_eq!(entries[0]["name"], "only.txt");
}

#[tokio::test]
async fn list_errors() {
    let daemon = Daemon::start().await;
    let missing = daemon.get("/files?path=/no/such/dir").await;
    assert_error_shape(&missing, 404, "FILE_NOT_FOUND", "GET", "/files");

    std::fs::write(daemon.home.join("file"), "").unwrap();
    let not_dir = daemon.get("/files?path=file").await;
    assert_error_shape(&not_dir, 400, "INVALID_FILE_PATH", "GET", "/files");
}

#[tokio::test]
async fn info_follows_links_and_reports_missing() {
    let daemon = Daemon::start().await;
    std::fs::create_dir(daemon.home.join("dir")).unwrap();
    symlink("dir", daemon.home.join("link")).unwrap();

    let info = daemon.get("/files/info?path=link").await.json();
    assert_eq!(info["name"], "link");
    assert_eq!(info["isDir"], true);

    let missing = daemon.get("/files/info?path=nothing").await;
    assert_error_shape(&missing, 404, "FILE_NOT_FOUND", "GET", "/files/info");
    assert!(
        missing.json()["message"]
            .as_str()
            .unwrap()
            .contains("nothing")
    );

    let no_path = daemon.get("/files/info").await;
    assert_error_shape(&no_path, 400, "INVALID_FILE_PATH", "GET", "/files/info");
}

#[tokio::test]
async fn create_folder_with_mode_and_parents() {
    let daemon = Daemon::start().await;
    let reply = daemon.post("/files/folder?path=a/b/c&mode=700").await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    assert_eq!(mode_of(&daemon.home.join("a/b/c")), 0o700);
    assert_eq!(mode_of(&daemon.home.join("a")), 0o700);

    let default_mode = daemon.post("/files/folder?path=d").await;
    assert_eq!(default_mode.status, StatusCode::CREATED);
    assert_eq!(mode_of(&daemon.home.join("d")), 0o755);

    let existing = daemon.post("/files/folder?path=d&mode=700").await;
    assert_eq!(existing.status, StatusCode::CREATED);
    assert_eq!(mode_of(&daemon.home.join("d")), 0o755);

    std::fs::write(daemon.home.join("file"), "").unwrap();
    let over_file = daemon.post("/files/folder?path=file").await;
    assert_error_shape(
        &over_file,
        400,
        "INVALID_FILE_PATH",
        "POST",
        "/files/folder",
    );

    let bad_mode = daemon.post("/files/folder?path=e&mode=99").await;
    assert_error_shape(&bad_mode, 400, "BAD_REQUEST", "POST", "/files/folder");

    let denied = daemon
        .post("/files/folder?path=/sys/daytona-test-dir")
        .await;
    assert_error_shape(&denied, 403, "FILE_ACCESS_DENIED", "POST", "/files/folder");
}

#[tokio::test]
async fn delete_files_links_and_dirs() {
    let daemon = Daemon::start().await;
    let home = &daemon.home;
    std::fs::write(home.join("target"), "keep").unwrap();
    symlink("target", home.join("link")).unwrap();
    std::fs::create_dir_all(home.join("full/inner")).unwrap();
    std::fs::write(home.join("full/inner/file"), "").unwrap();

    assert_eq!(
        daemon.delete("/files?path=link").await.status,
        StatusCode::NO_CONTENT
    );
    assert!(!home.join("link").exists());
    assert!(
        home.join("target").exists(),
        "deleting a link removed its target"
    );

    let not_empty = daemon.delete("/files?path=full").await;
    assert_error_shape(&not_empty, 400, "INVALID_FILE_PATH", "DELETE", "/files");
    assert!(home.join("full/inner/file").exists());

    let recursive = daemon.delete("/files?path=full&recursive=true").await;
    assert_eq!(recursive.status, StatusCode::NO_CONTENT);
    assert!(!home.join("full").exists());

    assert_eq!(
        daemon.delete("/files?path=target").await.status,
        StatusCode::NO_CONTENT
    );
    assert!(!home.join("target").exists());

    let missing = daemon.delete("/files?path=target").await;
    assert_error_shape(&missing, 404, "FILE_NOT_FOUND", "DELETE", "/files");
}

/// Uploads the local file at `source` to `destination` through a streamed multipart body.
async fn upload_file(daemon: &Daemon, source: &Path, destination: &str) -> Value {
    let file = tokio::fs::File::open(source).await.unwrap();
    let content = streamed(tokio_util::io::ReaderStream::new(file));
    let multipart = Multipart::new()
        .text("files[0].path", destination)
        .file_stream("files[0].file", destination, content);
    let reply = daemon.post_multipart("/files/bulk-upload", multipart).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    reply.json()
}

#[tokio::test]
async fn upload_download_round_trip_is_byte_exact() {
    let daemon = Daemon::start().await;
    let local = tempfile::tempdir().unwrap();
    for size in [0u64, 1, 64 * 1024 + 1, 100 * 1024 * 1024] {
        let source = local.path().join(format!("source-{size}"));
        let status = std::process::Command::new("head")
            .args(["-c", &size.to_string(), "/dev/urandom"])
            .stdout(std::fs::File::create(&source).unwrap())
            .status()
            .unwrap();
        assert!(status.success());
        let expected = sha256_file(&source);
        let remote = format!("data/file-{size}.bin");

        let uploaded = upload_file(&daemon, &source, &remote).await;
        assert_eq!(uploaded["files"][0]["bytes"], size);
        assert_eq!(
            sha256_file(&daemon.home.join(&remote)),
            expected,
            "stored, {size} B"
        );

        let single = daemon.get(&format!("/files/download?path={remote}")).await;
        assert_eq!(single.status, StatusCode::OK);
        let downloaded = local.path().join(format!("single-{size}"));
        std::fs::write(&downloaded, &single.body).unwrap();
        assert_eq!(
            sha256_file(&downloaded),
            expected,
            "single download, {size} B"
        );

        let bulk = daemon
            .post_json("/files/bulk-download", &json!({"paths": [remote]}))
            .await;
        let parts = parse_multipart(&bulk).await;
        assert_eq!(parts.len(), 1);
        let downloaded = local.path().join(format!("bulk-{size}"));
        std::fs::write(&downloaded, &parts[0].content).unwrap();
        assert_eq!(
            sha256_file(&downloaded),
            expected,
            "bulk download, {size} B"
        );
    }
}

#[derive(Debug)]
struct Part {
    name: String,
    disposition: String,
    content_type: String,
    content: Bytes,
}

/// Parses a bulk-download response, checking its content type and closing boundary.
async fn parse_multipart(reply: &common::Reply) -> Vec<Part> {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let content_type = reply.header("content-type");
    assert!(
        content_type.starts_with("multipart/form-data; boundary="),
        "{content_type}"
    );
    let boundary = multer::parse_boundary(content_type).unwrap();
    assert!(
        reply
            .body
            .ends_with(format!("--{boundary}--\r\n").as_bytes()),
        "the closing boundary is missing"
    );

    let body = reply.body.clone();
    let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(body) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut parts = Vec::new();
    while let Some(field) = multipart.next_field().await.unwrap() {
        let header = |name: &str| {
            field
                .headers()
                .get(name)
                .map(|value| String::from_utf8(value.as_bytes().to_vec()).unwrap())
                .unwrap_or_default()
        };
        let disposition = header("content-disposition");
        let content_type = header("content-type");
        let name = field.name().unwrap().to_owned();
        let content = field.bytes().await.unwrap();
        parts.push(Part {
            name,
            disposition,
            content_type,
            content,
        });
    }
    parts
}

#[tokio::test]
async fn bulk_download_has_file_and_error_parts() {
    let daemon = Daemon::start().await;
    std::fs::write(daemon.home.join("a.txt"), "alpha").unwrap();
    let odd_name = "we\"ird \\ näme.txt";
    std::fs::write(daemon.home.join(odd_name), "odd").unwrap();
    std::fs::create_dir(daemon.home.join("dir")).unwrap();
    let absolute = format!("{}/a.txt", daemon.home.display());

    let reply = daemon
        .post_json(
            "/files/bulk-download",
            &json!({"paths": ["a.txt", "missing.txt", odd_name, "dir", absolute]}),
        )
        .await;
    let parts = parse_multipart(&reply).await;
    assert_eq!(parts.len(), 5);

    assert_eq!(parts[0].name, "file");
    assert_eq!(
        parts[0].disposition,
        "form-data; name=\"file\"; filename=\"a.txt\"; filename*=utf-8''a.txt"
    );
    assert_eq!(parts[0].content, "alpha");

    assert_eq!(parts[1].name, "error");
    assert_eq!(parts[1].content_type, "application/json");
    let error: Value = serde_json::from_slice(&parts[1].content).unwrap();
    assert_eq!(error["statusCode"], 404);
    assert_eq!(error["code"], "FILE_NOT_FOUND");
    assert_eq!(error["source"], "DAYTONA_DAEMON");
    assert!(error["message"].as_str().unwrap().contains("missing.txt"));

    assert_eq!(parts[2].name, "file");
    assert_eq!(
        parts[2].disposition,
        "form-data; name=\"file\"; filename=\"we\\\"ird \\\\ näme.txt\"; \
         filename*=utf-8''we%22ird%20%5C%20n%C3%A4me.txt"
    );
    assert_eq!(parts[2].content, "odd");

    assert_eq!(parts[3].name, "error");
    let error: Value = serde_json::from_slice(&parts[3].content).unwrap();
    assert_eq!(error["statusCode"], 400);

    assert_eq!(parts[4].name, "file");
    assert!(
        parts[4]
            .disposition
            .contains(&format!("filename=\"{absolute}\""))
    );
}

#[tokio::test]
async fn download_is_an_octet_stream_attachment() {
    let daemon = Daemon::start().await;
    std::fs::write(daemon.home.join("report.csv"), "a,b\n").unwrap();
    let reply = daemon.get("/files/download?path=report.csv").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-type"), "application/octet-stream");
    assert_eq!(reply.header("content-length"), "4");
    assert_eq!(
        reply.header("content-disposition"),
        "attachment; filename=\"report.csv\"; filename*=UTF-8''report.csv"
    );
    assert_eq!(reply.body, "a,b\n");

    let missing = daemon.get("/files/download?path=none").await;
    assert_error_shape(&missing, 404, "FILE_NOT_FOUND", "GET", "/files/download");
    let dir = daemon.get("/files/download?path=.").await;
    assert_error_shape(&dir, 400, "INVALID_FILE_PATH", "GET", "/files/download");

    nix::unistd::mkfifo(&daemon.home.join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    let fifo = daemon.get("/files/download?path=fifo").await;
    assert_error_shape(&fifo, 400, "INVALID_FILE_PATH", "GET", "/files/download");
}

#[tokio::test]
async fn upload_creates_files_and_parents() {
    let daemon = Daemon::start().await;
    let reply = daemon.upload(&[("deep/er/new.txt", b"new")]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        reply.json(),
        json!({"files": [{"path": "deep/er/new.txt", "bytes": 3}], "errors": []})
    );
    let path = daemon.home.join("deep/er/new.txt");
    assert_eq!(std::fs::read(&path).unwrap(), b"new");
    assert_eq!(mode_of(&path), 0o644);
    assert_eq!(mode_of(&daemon.home.join("deep/er")), 0o755);
    assert!(temp_files_in(&daemon.home.join("deep/er")).is_empty());
}

#[tokio::test]
async fn upload_replaces_and_keeps_mode() {
    let daemon = Daemon::start().await;
    let path = daemon.home.join("script.sh");
    std::fs::write(&path, "old").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o750)).unwrap();

    let reply = daemon.upload(&[("script.sh", b"replaced")]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(std::fs::read(&path).unwrap(), b"replaced");
    assert_eq!(mode_of(&path), 0o750);
}

#[tokio::test]
async fn upload_writes_through_symlinks() {
    let daemon = Daemon::start().await;
    let home = &daemon.home;
    std::fs::write(home.join("real.txt"), "old").unwrap();
    symlink("real.txt", home.join("link.txt")).unwrap();
    symlink("sub/not-yet.txt", home.join("dangling.txt")).unwrap();

    let reply = daemon
        .upload(&[("link.txt", b"through link"), ("dangling.txt", b"created")])
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());

    assert!(
        std::fs::symlink_metadata(home.join("link.txt"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        std::fs::read(home.join("real.txt")).unwrap(),
        b"through link"
    );
    assert!(
        std::fs::symlink_metadata(home.join("dangling.txt"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        std::fs::read(home.join("sub/not-yet.txt")).unwrap(),
        b"created"
    );
}

#[tokio::test]
async fn bulk_upload_continues_after_a_failure() {
    let daemon = Daemon::start().await;
    std::fs::create_dir(daemon.home.join("a-dir")).unwrap();
    let reply = daemon
        .upload(&[("first.txt", b"1"), ("a-dir", b"x"), ("third.txt", b"3")])
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let body = reply.json();
    assert_eq!(
        body["files"],
        json!([{"path": "first.txt", "bytes": 1}, {"path": "third.txt", "bytes": 1}])
    );
    let errors = body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1);
    assert!(errors[0].as_str().unwrap().contains("a-dir"), "{errors:?}");
    assert_eq!(std::fs::read(daemon.home.join("third.txt")).unwrap(), b"3");
    assert!(daemon.home.join("a-dir").is_dir());
}

#[tokio::test]
async fn bulk_upload_accepts_file_before_path() {
    let daemon = Daemon::start().await;
    let multipart = Multipart::new()
        .file("files[0].file", "x", Bytes::from_static(b"late path"))
        .text("files[0].path", "late.txt")
        .file("files[1].file", "y", Bytes::from_static(b"no path"));
    let reply = daemon.post_multipart("/files/bulk-upload", multipart).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["files"], json!([{"path": "late.txt", "bytes": 9}]));
    assert!(body["errors"][0].as_str().unwrap().contains("files[1]"));
    assert_eq!(
        std::fs::read(daemon.home.join("late.txt")).unwrap(),
        b"late path"
    );
}

#[tokio::test]
async fn single_upload_writes_file_field() {
    let daemon = Daemon::start().await;
    let multipart = Multipart::new().file("file", "ignored", Bytes::from_static(b"single"));
    let reply = daemon
        .post_multipart("/files/upload?path=one/single.txt", multipart)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        std::fs::read(daemon.home.join("one/single.txt")).unwrap(),
        b"single"
    );

    let missing_field = daemon
        .post_multipart("/files/upload?path=x", Multipart::new().text("other", "v"))
        .await;
    assert_error_shape(&missing_field, 400, "BAD_REQUEST", "POST", "/files/upload");
}

#[tokio::test]
async fn upload_needs_multipart_body() {
    let daemon = Daemon::start().await;
    let reply = daemon.post_json("/files/bulk-upload", &json!({})).await;
    assert_error_shape(&reply, 400, "BAD_REQUEST", "POST", "/files/bulk-upload");
}

#[tokio::test]
async fn truncated_upload_keeps_old_file() {
    let daemon = Daemon::start().await;
    let victim = daemon.home.join("victim.txt");
    std::fs::write(&victim, "old content").unwrap();

    let mut stream = std::os::unix::net::UnixStream::connect(&daemon.socket).unwrap();
    let head = "--B\r\nContent-Disposition: form-data; name=\"files[0].path\"\r\n\r\nvictim.txt\r\n\
                --B\r\nContent-Disposition: form-data; name=\"files[0].file\"; filename=\"v\"\r\n\
                Content-Type: application/octet-stream\r\n\r\n";
    write!(
        stream,
        "POST /files/bulk-upload HTTP/1.1\r\nHost: toolbox\r\n\
         Content-Type: multipart/form-data; boundary=B\r\nContent-Length: 100000000\r\n\r\n{head}"
    )
    .unwrap();
    stream.write_all(&vec![b'x'; 2 * 1024 * 1024]).unwrap();

    let home = daemon.home.clone();
    wait_for(
        "the upload's temporary file",
        Duration::from_secs(5),
        || !temp_files_in(&home).is_empty(),
    )
    .await;
    drop(stream);

    wait_for(
        "the temporary file to be removed",
        Duration::from_secs(5),
        || temp_files_in(&home).is_empty(),
    )
    .await;
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "old content");
}

#[tokio::test]
async fn large_upload_keeps_memory_small() {
    let daemon = Daemon::start().await;
    const BLOCK: usize = 64 * 1024;
    const BLOCKS: usize = 3200; // 200 MiB
    let block = Bytes::from(vec![0x5a; BLOCK]);
    let content = futures_util::stream::repeat(block)
        .take(BLOCKS)
        .map(Ok::<_, std::io::Error>);
    let multipart = Multipart::new()
        .text("files[0].path", "big.bin")
        .file_stream("files[0].file", "big.bin", streamed(content));
    let reply = daemon.post_multipart("/files/bulk-upload", multipart).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());

    let size = std::fs::metadata(daemon.home.join("big.bin"))
        .unwrap()
        .size();
    assert_eq!(size, (BLOCK * BLOCKS) as u64);
    let peak = daemon.peak_rss_kib();
    assert!(
        peak < 64 * 1024,
        "peak RSS {peak} KiB during a 200 MiB upload"
    );

    let mut file = std::fs::File::open(daemon.home.join("big.bin")).unwrap();
    let mut head = [0u8; 16];
    file.read_exact(&mut head).unwrap();
    assert_eq!(head, [0x5a; 16]);
}

#[tokio::test]
async fn upload_into_unwritable_dir_is_403() {
    let daemon = Daemon::start().await;
    let reply = daemon.upload(&[("/sys/daytona-test-file", b"x")]).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let errors = reply.json()["errors"].clone();
    assert!(
        errors[0].as_str().unwrap().contains("permission denied"),
        "{errors}"
    );
}

/// Sends `head` and `body` on a raw connection, the body's last two bytes late, and returns
/// everything the daemon wrote back until it closed the connection or `idle` passed.
async fn send_with_late_tail(daemon: &Daemon, head: &str, body: &[u8], idle: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut stream = tokio::net::UnixStream::connect(&daemon.socket)
        .await
        .unwrap();
    let (early, late) = body.split_at(body.len() - 2);
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(early).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The daemon must still read this: a closed connection would fail it or lose the reply.
    stream.write_all(late).await.unwrap();
    let second = "GET /files/info?path=%2F HTTP/1.1\r\nhost: sandbox\r\nconnection: close\r\n\r\n";
    stream.write_all(second.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    let _ = tokio::time::timeout(idle, stream.read_to_end(&mut received)).await;
    String::from_utf8_lossy(&received).into_owned()
}

#[tokio::test]
async fn upload_with_late_epilogue_keeps_connection() {
    let daemon = Daemon::start().await;
    let boundary = "XyZ";
    let body = format!(
        "--{boundary}\r\ncontent-disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\nhello\r\n--{boundary}--\r\n"
    );
    let path = daemon.home.join("late.txt");
    let head = format!(
        "POST /files/upload?path={} HTTP/1.1\r\nhost: sandbox\r\ncontent-type: multipart/form-data; boundary={boundary}\r\ncontent-length: {}\r\n\r\n",
        path.display(),
        body.len()
    );
    let replies =
        send_with_late_tail(&daemon, &head, body.as_bytes(), Duration::from_secs(10)).await;
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "hello");
    // Both requests were answered on the one connection.
    assert_eq!(replies.matches("HTTP/1.1 200 OK").count(), 2, "{replies}");
}
