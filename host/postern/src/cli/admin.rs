//! The admin socket's client side: one command out, one JSON document back
//! (`server::admin` answers). Input: the server's answer, parsed as JSON.

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// Client side: send `command`, return the JSON answer.
pub async fn request(path: &std::path::Path, command: &str) -> anyhow::Result<serde_json::Value> {
    let mut stream = UnixStream::connect(path).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot reach the running server at {}: {e} (is `postern serve` running with this configuration?)",
            path.display()
        )
    })?;
    stream.write_all(format!("{command}\n").as_bytes()).await?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).await?;
    Ok(serde_json::from_str(&line)?)
}
