//! `/files/*` beyond upload and download: move, permissions, find, search, replace, recursive
//! listing and the signed-URL upload route.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;

use bytes::Bytes;
use common::{Daemon, Multipart, assert_error_shape, full, is_root};
use hyper::{Method, Request};
use serde_json::{Value, json};

fn write(root: &Path, path: &str, content: &str) {
    let path = root.join(path);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// A small project with sources, dependencies and version control data.
fn project(home: &Path) {
    write(
        home,
        "proj/src/main.py",
        "import os\n# TODO: first\nprint('x')\n",
    );
    write(
        home,
        "proj/src/util/helpers.py",
        "def f():\n    pass  # TODO: second\r\n",
    );
    write(home, "proj/README.md", "no marker here\n");
    write(
        home,
        "proj/node_modules/pkg/index.js",
        "// TODO: vendored\n",
    );
    write(home, "proj/.git/config", "TODO: git data\n");
    std::fs::write(home.join("proj/src/blob.bin"), b"TODO\0binary").unwrap();
}

fn names(value: &Value) -> Vec<String> {
    value["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|file| file.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn find_returns_matching_lines_outside_vendored_dirs() {
    let daemon = Daemon::start().await;
    project(&daemon.home);

    let reply = daemon.get("/files/find?path=proj&pattern=TODO:").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("x-daytona-truncated"), "");
    assert_eq!(
        reply.json(),
        json!([
            {"file": "proj/src/main.py", "line": 2, "content": "# TODO: first"},
            {"file": "proj/src/util/helpers.py", "line": 2, "content": "    pass  # TODO: second"},
        ])
    );

    let absolute = daemon.home.join("proj").display().to_string();
    let reply = daemon
        .get(&format!(
            "/files/find?path={absolute}&pattern=TODO:&includeSkippedDirs=true"
        ))
        .await;
    let files: Vec<String> = reply
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["file"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        files,
        [
            format!("{absolute}/.git/config"),
            format!("{absolute}/node_modules/pkg/index.js"),
            format!("{absolute}/src/main.py"),
            format!("{absolute}/src/util/helpers.py"),
        ]
    );
}

#[tokio::test]
async fn find_in_one_file_and_literal_patterns() {
    let daemon = Daemon::start().await;
    write(&daemon.home, "one.txt", "a.b\naxb\nA.B\n");
    let reply = daemon.get("/files/find?path=one.txt&pattern=a.b").await;
    assert_eq!(
        reply.json(),
        json!([{"file": "one.txt", "line": 1, "content": "a.b"}])
    );
    assert!(reply.json()[0]["line"].is_u64());
}

#[tokio::test]
async fn find_cut_at_max_results_says_so() {
    let daemon = Daemon::start().await;
    let lines: String = (0..50).map(|i| format!("match {i}\n")).collect();
    write(&daemon.home, "many/a.txt", &lines);
    write(&daemon.home, "many/b.txt", &lines);

    let reply = daemon
        .get("/files/find?path=many&pattern=match&maxResults=60")
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json().as_array().unwrap().len(), 60);
    assert_eq!(reply.header("x-daytona-truncated"), "true");
    assert_eq!(reply.header("x-daytona-truncated-limit"), "maxResults=60");

    let reply = daemon
        .get("/files/find?path=many&pattern=match&maxResults=100")
        .await;
    assert_eq!(reply.json().as_array().unwrap().len(), 100);
    assert_eq!(reply.header("x-daytona-truncated"), "");
}

#[tokio::test]
async fn find_skips_large_files_and_counts_them() {
    let daemon = Daemon::start().await;
    write(&daemon.home, "sizes/small.txt", "needle\n");
    write(
        &daemon.home,
        "sizes/large.txt",
        &format!("needle\n{}", "x".repeat(2000)),
    );
    let reply = daemon
        .get("/files/find?path=sizes&pattern=needle&maxFileSize=1000")
        .await;
    assert_eq!(
        reply.json(),
        json!([{"file": "sizes/small.txt", "line": 1, "content": "needle"}])
    );
    assert_eq!(reply.header("x-daytona-skipped-files"), "1");
}

#[tokio::test]
async fn find_depth_limit_is_reported() {
    let daemon = Daemon::start().await;
    write(&daemon.home, "deep/a/b/c/d.txt", "needle\n");
    let reply = daemon
        .get("/files/find?path=deep&pattern=needle&maxDepth=2")
        .await;
    assert_eq!(reply.json(), json!([]));
    assert_eq!(reply.header("x-daytona-truncated"), "true");
    assert_eq!(reply.header("x-daytona-truncated-limit"), "maxDepth=2");
}

#[tokio::test]
async fn find_and_search_errors() {
    let daemon = Daemon::start().await;
    let reply = daemon.get("/files/find?path=nowhere&pattern=x").await;
    assert_error_shape(&reply, 404, "FILE_NOT_FOUND", "GET", "/files/find");
    let reply = daemon.get("/files/find?path=.").await;
    assert_error_shape(&reply, 400, "BAD_REQUEST", "GET", "/files/find");
    let reply = daemon.get("/files/find?pattern=x").await;
    assert_error_shape(&reply, 400, "INVALID_FILE_PATH", "GET", "/files/find");
    let reply = daemon
        .get("/files/find?path=.&pattern=x&maxResults=0")
        .await;
    assert_error_shape(&reply, 400, "BAD_REQUEST", "GET", "/files/find");
    let reply = daemon.get("/files/search?path=.&pattern=%5B").await;
    assert_error_shape(&reply, 400, "BAD_REQUEST", "GET", "/files/search");
    write(&daemon.home, "file.txt", "x");
    let reply = daemon.get("/files/search?path=file.txt&pattern=*").await;
    assert_error_shape(&reply, 400, "INVALID_FILE_PATH", "GET", "/files/search");
}

#[tokio::test]
async fn search_matches_names_at_any_depth() {
    let daemon = Daemon::start().await;
    project(&daemon.home);

    let reply = daemon.get("/files/search?path=proj&pattern=*.py").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        names(&reply.json()),
        ["proj/src/main.py", "proj/src/util/helpers.py"]
    );

    // Directories match too.
    let reply = daemon.get("/files/search?path=proj&pattern=util").await;
    assert_eq!(names(&reply.json()), ["proj/src/util"]);

    // A pattern with a slash matches the path below the search root.
    let reply = daemon.get("/files/search?path=proj&pattern=src/*.py").await;
    assert_eq!(names(&reply.json()), ["proj/src/main.py"]);
    let reply = daemon
        .get("/files/search?path=proj&pattern=src/**/*.py")
        .await;
    assert_eq!(
        names(&reply.json()),
        ["proj/src/main.py", "proj/src/util/helpers.py"]
    );

    let reply = daemon
        .get("/files/search?path=proj&pattern=*.js&includeSkippedDirs=true")
        .await;
    assert_eq!(names(&reply.json()), ["proj/node_modules/pkg/index.js"]);
    let reply = daemon.get("/files/search?path=proj&pattern=*.js").await;
    assert_eq!(names(&reply.json()), Vec::<String>::new());

    let reply = daemon
        .get("/files/search?path=proj&pattern=*&maxResults=2")
        .await;
    assert_eq!(names(&reply.json()).len(), 2);
    assert_eq!(reply.header("x-daytona-truncated-limit"), "maxResults=2");
}

#[tokio::test]
async fn replace_rewrites_files_atomically() {
    let daemon = Daemon::start().await;
    let home = &daemon.home;
    write(home, "r/a.txt", "old and old\n");
    write(home, "r/b.sh", "echo old\n");
    std::fs::set_permissions(home.join("r/b.sh"), std::fs::Permissions::from_mode(0o750)).unwrap();
    write(home, "r/untouched.txt", "nothing\n");
    symlink("a.txt", home.join("r/link")).unwrap();
    let untouched_inode = std::fs::metadata(home.join("r/untouched.txt"))
        .unwrap()
        .ino();

    let reply = daemon
        .post_json(
            "/files/replace",
            &json!({"files": ["r/a.txt", "r/b.sh", "r/untouched.txt", "r/missing.txt", "r"],
                    "pattern": "old", "newValue": "new"}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let results = reply.json();
    assert_eq!(results[0], json!({"file": "r/a.txt", "success": true}));
    assert_eq!(results[1], json!({"file": "r/b.sh", "success": true}));
    assert_eq!(
        results[2],
        json!({"file": "r/untouched.txt", "success": true})
    );
    assert_eq!(results[3]["success"], false);
    assert!(results[3]["error"].as_str().unwrap().contains("not found"));
    assert_eq!(results[4]["success"], false);

    assert_eq!(
        std::fs::read_to_string(home.join("r/a.txt")).unwrap(),
        "new and new\n"
    );
    assert_eq!(
        std::fs::read_to_string(home.join("r/b.sh")).unwrap(),
        "echo new\n"
    );
    assert_eq!(mode_of(&home.join("r/b.sh")), 0o750);
    assert_eq!(
        std::fs::metadata(home.join("r/untouched.txt"))
            .unwrap()
            .ino(),
        untouched_inode
    );

    // Through a symbolic link, the target changes and the link stays.
    let reply = daemon
        .post_json(
            "/files/replace",
            &json!({"files": ["r/link"], "pattern": "new", "newValue": "newest"}),
        )
        .await;
    assert_eq!(reply.json()[0]["success"], true);
    assert!(
        std::fs::symlink_metadata(home.join("r/link"))
            .unwrap()
            .is_symlink()
    );
    assert_eq!(
        std::fs::read_to_string(home.join("r/a.txt")).unwrap(),
        "newest and newest\n"
    );
    let leftovers = std::fs::read_dir(home.join("r"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".daytona-")
        })
        .count();
    assert_eq!(leftovers, 0);

    let reply = daemon
        .post_json(
            "/files/replace",
            &json!({"files": ["r/a.txt"], "pattern": "", "newValue": "x"}),
        )
        .await;
    assert_error_shape(&reply, 400, "BAD_REQUEST", "POST", "/files/replace");
}

#[tokio::test]
async fn move_renames_and_refuses_to_overwrite() {
    let daemon = Daemon::start().await;
    let home = &daemon.home;
    write(home, "m/a.txt", "a");
    write(home, "m/dir/inner.txt", "inner");
    write(home, "m/taken.txt", "taken");

    let reply = daemon
        .post("/files/move?source=m/a.txt&destination=m/b.txt")
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(!home.join("m/a.txt").exists());
    assert_eq!(std::fs::read_to_string(home.join("m/b.txt")).unwrap(), "a");

    let reply = daemon
        .post("/files/move?source=m/dir&destination=m/moved-dir")
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(home.join("m/moved-dir/inner.txt").is_file());

    let reply = daemon
        .post("/files/move?source=m/b.txt&destination=m/taken.txt")
        .await;
    assert_error_shape(&reply, 409, "CONFLICT", "POST", "/files/move");
    assert_eq!(
        std::fs::read_to_string(home.join("m/taken.txt")).unwrap(),
        "taken"
    );

    let reply = daemon
        .post("/files/move?source=m/none&destination=m/x")
        .await;
    assert_error_shape(&reply, 404, "FILE_NOT_FOUND", "POST", "/files/move");
    let reply = daemon
        .post("/files/move?source=m/b.txt&destination=m/no-dir/x")
        .await;
    assert_error_shape(&reply, 404, "FILE_NOT_FOUND", "POST", "/files/move");
    let reply = daemon.post("/files/move?source=m/b.txt").await;
    assert_error_shape(&reply, 400, "INVALID_FILE_PATH", "POST", "/files/move");
    let reply = daemon
        .post("/files/move?source=m/moved-dir&destination=m/moved-dir/sub")
        .await;
    assert_error_shape(&reply, 400, "INVALID_FILE_PATH", "POST", "/files/move");
}

#[tokio::test]
async fn move_across_file_systems_copies_then_removes() {
    // /dev/shm is a tmpfs; the test's home is on another file system when /tmp is not tmpfs.
    let shm = Path::new("/dev/shm");
    let daemon = Daemon::start().await;
    let same_device = std::fs::metadata(shm).map(|m| m.dev()).ok()
        == std::fs::metadata(&daemon.home).map(|m| m.dev()).ok();
    if !shm.is_dir() || same_device {
        eprintln!("SKIPPED: no second file system (/dev/shm) next to the test's home");
        return;
    }
    let target = tempfile::tempdir_in(shm).unwrap();
    write(&daemon.home, "x/tree/file.sh", "#!/bin/sh\n");
    std::fs::set_permissions(
        daemon.home.join("x/tree/file.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    symlink("file.sh", daemon.home.join("x/tree/link")).unwrap();

    let destination = target.path().join("tree");
    let reply = daemon
        .post(&format!(
            "/files/move?source=x/tree&destination={}",
            destination.display()
        ))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(!daemon.home.join("x/tree").exists());
    assert_eq!(mode_of(&destination.join("file.sh")), 0o755);
    assert_eq!(
        std::fs::read_link(destination.join("link")).unwrap(),
        Path::new("file.sh")
    );
}

#[tokio::test]
async fn permissions_change_mode_and_owner() {
    let daemon = Daemon::start().await;
    write(&daemon.home, "p.txt", "x");
    let path = daemon.home.join("p.txt");

    let reply = daemon.post("/files/permissions?path=p.txt&mode=640").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(mode_of(&path), 0o640);

    let reply = daemon.post("/files/permissions?path=p.txt&mode=99").await;
    assert_error_shape(&reply, 400, "BAD_REQUEST", "POST", "/files/permissions");
    let reply = daemon
        .post("/files/permissions?path=none.txt&mode=600")
        .await;
    assert_error_shape(&reply, 404, "FILE_NOT_FOUND", "POST", "/files/permissions");
    let reply = daemon
        .post("/files/permissions?path=p.txt&owner=no-such-user-xyz")
        .await;
    assert_error_shape(&reply, 400, "BAD_REQUEST", "POST", "/files/permissions");
    let reply = daemon
        .post("/files/permissions?path=p.txt&group=no-such-group-xyz")
        .await;
    assert_error_shape(&reply, 400, "BAD_REQUEST", "POST", "/files/permissions");

    if !is_root() {
        eprintln!("SKIPPED: changing owners needs root");
        return;
    }
    // Names come from /etc/passwd and /etc/group; numbers are used as they are.
    let reply = daemon
        .post("/files/permissions?path=p.txt&owner=nobody&group=4321")
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let metadata = std::fs::metadata(&path).unwrap();
    assert_eq!(metadata.uid(), 65534);
    assert_eq!(metadata.gid(), 4321);
    let reply = daemon
        .post("/files/permissions?path=p.txt&owner=0&group=root")
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(std::fs::metadata(&path).unwrap().uid(), 0);
    assert_eq!(std::fs::metadata(&path).unwrap().gid(), 0);
}

#[tokio::test]
async fn list_with_depth_is_recursive() {
    let daemon = Daemon::start().await;
    write(&daemon.home, "tree/a/b/deep.txt", "d");
    write(&daemon.home, "tree/top.txt", "t");
    let root = daemon.home.join("tree");

    let paths = |reply: &common::Reply| -> Vec<String> {
        reply
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|entry| entry["path"].as_str().unwrap().to_owned())
            .collect()
    };
    let reply = daemon.get("/files?path=tree").await;
    assert_eq!(
        paths(&reply),
        [
            format!("{}/a", root.display()),
            format!("{}/top.txt", root.display())
        ]
    );
    let reply = daemon.get("/files?path=tree&depth=2").await;
    assert_eq!(
        paths(&reply),
        [
            format!("{}/a", root.display()),
            format!("{}/a/b", root.display()),
            format!("{}/top.txt", root.display())
        ]
    );
    let reply = daemon.get("/files?path=tree&depth=10").await;
    let all = paths(&reply);
    assert_eq!(all.len(), 4);
    assert_eq!(all[2], format!("{}/a/b/deep.txt", root.display()));
    let deep = &reply.json()[2];
    assert_eq!(deep["name"], "deep.txt");
    assert_eq!(deep["size"], 1);

    let reply = daemon.get("/files?path=tree&depth=0").await;
    assert_error_shape(&reply, 400, "BAD_REQUEST", "GET", "/files");
    let reply = daemon.get("/files?path=tree&depth=x").await;
    assert_error_shape(&reply, 400, "BAD_REQUEST", "GET", "/files");
}

#[tokio::test]
async fn upload_v2_takes_multipart_or_raw_bodies() {
    let daemon = Daemon::start().await;
    let multipart = Multipart::new().text("other", "ignored").file(
        "file",
        "x.bin",
        Bytes::from_static(b"multipart content"),
    );
    let reply = daemon
        .post_multipart("/files/upload-v2?path=up/one.bin", multipart)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.json(),
        json!({"name": "one.bin", "path": "up/one.bin", "type": "file"})
    );
    let written = daemon.home.join("up/one.bin");
    assert_eq!(std::fs::read(&written).unwrap(), b"multipart content");
    assert_eq!(mode_of(&written), 0o644);

    let request = Request::builder()
        .method(Method::POST)
        .uri("/files/upload-v2?path=/tmp/daytona-upload-v2-raw.bin")
        .header("host", "toolbox")
        .header("content-type", "application/octet-stream")
        .body(full(Bytes::from_static(b"raw content")))
        .unwrap();
    let reply = daemon.request(request).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["name"], "daytona-upload-v2-raw.bin");
    assert_eq!(
        std::fs::read("/tmp/daytona-upload-v2-raw.bin").unwrap(),
        b"raw content"
    );
    std::fs::remove_file("/tmp/daytona-upload-v2-raw.bin").unwrap();

    let reply = daemon.post("/files/upload-v2").await;
    assert_error_shape(&reply, 400, "INVALID_FILE_PATH", "POST", "/files/upload-v2");
}

#[tokio::test]
async fn new_file_routes_are_documented() {
    let daemon = Daemon::start().await;
    let document = daemon.get("/openapi.json").await.json();
    let paths = document["paths"].as_object().unwrap();
    for (path, method) in [
        ("/files/move", "post"),
        ("/files/permissions", "post"),
        ("/files/find", "get"),
        ("/files/search", "get"),
        ("/files/replace", "post"),
        ("/files/upload-v2", "post"),
        ("/system/metrics", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|item| item.get(method)).is_some(),
            "{method} {path} is not documented"
        );
    }
    let list_params = document["paths"]["/files"]["get"]["parameters"].to_string();
    assert!(list_params.contains("depth"), "{list_params}");
}

/// A client may still be sending the end of its body (the last chunk of a chunked body, an
/// epilogue after the closing boundary) when the multipart parser has seen the closing
/// boundary. The upload must still get its response on the same connection.
#[tokio::test]
async fn upload_answers_after_a_late_end_of_body() {
    use futures_util::StreamExt;

    let daemon = Daemon::start().await;
    let boundary = "late-end-boundary";
    let parts = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"files[0].path\"\r\n\r\nlate.txt\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"files[0].file\"; filename=\"late.txt\"\r\n\
         Content-Type: application/octet-stream\r\n\r\nlate content\r\n--{boundary}--\r\n"
    );
    for route in [
        "/files/bulk-upload",
        "/files/upload?path=late-single.txt",
        "/files/upload-v2?path=late-v2.txt",
    ] {
        let single_field = route != "/files/bulk-upload";
        let body_text = if single_field {
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x\"\r\n\
                 Content-Type: application/octet-stream\r\n\r\nlate content\r\n--{boundary}--\r\n"
            )
        } else {
            parts.clone()
        };
        let chunks = futures_util::stream::iter([
            Ok::<_, std::io::Error>(Bytes::from(body_text)),
            Ok(Bytes::from_static(
                b"epilogue after the closing boundary\r\n",
            )),
        ])
        .then(|chunk| async move {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            chunk
        });
        let request = Request::builder()
            .method(Method::POST)
            .uri(route)
            .header("host", "toolbox")
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(common::streamed(chunks))
            .unwrap();
        let reply = daemon.request(request).await;
        assert_eq!(reply.status, 200, "{route}: {}", reply.text());
    }
    assert_eq!(
        std::fs::read_to_string(daemon.home.join("late.txt")).unwrap(),
        "late content"
    );
    assert_eq!(
        std::fs::read_to_string(daemon.home.join("late-v2.txt")).unwrap(),
        "late content"
    );
}
