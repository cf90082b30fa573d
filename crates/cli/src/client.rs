//! Client subcommands: they call the API at `DAYTONA_API_URL` with `DAYTONA_API_KEY`.

use anyhow::{Context, bail};
use clap::Subcommand;
use daytona_wire::api::{ListSandboxes, PaginatedSnapshots, Sandbox};
use daytona_wire::toolbox::{ExecuteRequest, ExecuteResponse};
use serde::Serialize;
use serde::de::DeserializeOwned;

#[derive(Debug, Subcommand)]
pub enum SandboxCommand {
    /// List sandboxes.
    List,
    /// Create a sandbox and print its id.
    Create {
        /// Name of the sandbox [default: its id].
        #[arg(long)]
        name: Option<String>,
        /// Snapshot to start from [default: the server's default snapshot].
        #[arg(long)]
        snapshot: Option<String>,
    },
    /// Show one sandbox as JSON.
    Get { id_or_name: String },
    /// Delete a sandbox.
    Delete { id_or_name: String },
    /// Start a stopped sandbox.
    Start { id_or_name: String },
    /// Stop a sandbox; its files stay.
    Stop { id_or_name: String },
    /// Run a shell command in a sandbox and print its output; exits with its exit code.
    Exec {
        id_or_name: String,
        /// The command, run by the sandbox's shell.
        command: String,
        /// Seconds before the command is killed.
        #[arg(long)]
        timeout: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// List snapshots.
    List,
}

struct Client {
    http: reqwest::Client,
    api_url: String,
    api_key: String,
}

impl Client {
    fn from_env() -> anyhow::Result<Self> {
        let api_url = std::env::var("DAYTONA_API_URL")
            .unwrap_or_else(|_| "http://127.0.0.1:3000/api".to_owned())
            .trim_end_matches('/')
            .to_owned();
        let api_key = std::env::var("DAYTONA_API_KEY")
            .context("DAYTONA_API_KEY is not set; export the key `daytona server` printed at its first start")?;
        Ok(Self {
            http: reqwest::Client::new(),
            api_url,
            api_key,
        })
    }

    async fn send<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> anyhow::Result<T> {
        let response = request
            .bearer_auth(&self.api_key)
            .send()
            .await
            .with_context(|| format!("failed to reach the API at {}", self.api_url))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .context("failed to read the API's response")?;
        if !status.is_success() {
            let message = serde_json::from_slice::<daytona_wire::ErrorBody>(&body)
                .map(|error| error.message)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
            bail!("{status}: {message}");
        }
        serde_json::from_slice(&body).context("the API's response is not the expected JSON")
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(self.http.get(format!("{}{path}", self.api_url)))
            .await
    }

    async fn post<T: DeserializeOwned>(
        &self,
        url: String,
        body: &impl Serialize,
    ) -> anyhow::Result<T> {
        self.send(self.http.post(url).json(body)).await
    }

    async fn sandbox(&self, id_or_name: &str) -> anyhow::Result<Sandbox> {
        self.get(&format!("/sandbox/{id_or_name}")).await
    }
}

fn block_on<F: std::future::Future<Output = anyhow::Result<()>>>(future: F) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?
        .block_on(future)
}

fn print_json(value: &impl Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("wire types always serialize")
    );
}

pub fn run_sandbox(command: SandboxCommand) -> anyhow::Result<()> {
    block_on(async move {
        let client = Client::from_env()?;
        match command {
            SandboxCommand::List => {
                let mut cursor: Option<String> = None;
                let mut printed_header = false;
                loop {
                    let path = match &cursor {
                        Some(cursor) => format!("/sandbox?cursor={cursor}"),
                        None => "/sandbox".to_owned(),
                    };
                    let page: ListSandboxes = client.get(&path).await?;
                    if !printed_header {
                        println!("{:<38} {:<24} {:<10} CREATED", "ID", "NAME", "STATE");
                        printed_header = true;
                    }
                    for sandbox in &page.items {
                        println!(
                            "{:<38} {:<24} {:<10} {}",
                            sandbox.id, sandbox.name, sandbox.state, sandbox.created_at
                        );
                    }
                    match page.next_cursor {
                        Some(next) => cursor = Some(next),
                        None => break,
                    }
                }
            }
            SandboxCommand::Create { name, snapshot } => {
                let body = serde_json::json!({ "name": name, "snapshot": snapshot });
                let sandbox: Sandbox = client
                    .post(format!("{}/sandbox", client.api_url), &body)
                    .await?;
                println!("{}", sandbox.id);
            }
            SandboxCommand::Get { id_or_name } => print_json(&client.sandbox(&id_or_name).await?),
            SandboxCommand::Delete { id_or_name } => {
                let sandbox: Sandbox = client
                    .send(
                        client
                            .http
                            .delete(format!("{}/sandbox/{id_or_name}", client.api_url)),
                    )
                    .await?;
                println!("deleted {}", sandbox.id);
            }
            SandboxCommand::Start { id_or_name } => {
                let sandbox: Sandbox = client
                    .post(
                        format!("{}/sandbox/{id_or_name}/start", client.api_url),
                        &serde_json::json!({}),
                    )
                    .await?;
                println!("{} is {}", sandbox.id, sandbox.state);
            }
            SandboxCommand::Stop { id_or_name } => {
                let sandbox: Sandbox = client
                    .post(
                        format!("{}/sandbox/{id_or_name}/stop", client.api_url),
                        &serde_json::json!({}),
                    )
                    .await?;
                println!("{} is {}", sandbox.id, sandbox.state);
            }
            SandboxCommand::Exec {
                id_or_name,
                command,
                timeout,
            } => {
                let sandbox = client.sandbox(&id_or_name).await?;
                let url = format!(
                    "{}/{}/process/execute",
                    sandbox.toolbox_proxy_url, sandbox.id
                );
                let request = ExecuteRequest {
                    command,
                    cwd: None,
                    envs: None,
                    timeout,
                };
                let response: ExecuteResponse = client.post(url, &request).await?;
                print!("{}", response.result);
                std::process::exit(response.exit_code.clamp(0, 255));
            }
        }
        Ok(())
    })
}

pub fn run_snapshot(command: SnapshotCommand) -> anyhow::Result<()> {
    block_on(async move {
        let client = Client::from_env()?;
        match command {
            SnapshotCommand::List => {
                let page: PaginatedSnapshots = client.get("/snapshots?limit=200").await?;
                println!("{:<30} {:<10} SIZE (GiB)", "NAME", "STATE");
                for snapshot in page.items {
                    let size = snapshot.size.map(|s| format!("{s:.2}")).unwrap_or_default();
                    println!(
                        "{:<30} {:<10} {}",
                        snapshot.name,
                        serde_json::to_value(snapshot.state)?.as_str().unwrap_or(""),
                        size
                    );
                }
            }
        }
        Ok(())
    })
}
