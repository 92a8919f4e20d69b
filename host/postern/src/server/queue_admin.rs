//! `queue ...` on the admin socket: list, show, flush, release and delete,
//! answered by the running queue manager as one JSON document. Input: the
//! command line of a local operator (queue ids are parsed as `QueueId`
//! before they name anything).

use serde_json::{Value, json};

use postern_delivery::QueueHandle;
use postern_spool::QueueId;

/// A queue id as the operator typed it, or why it is not one.
pub fn parse_id(text: &str) -> Result<QueueId, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a queue id (20 characters of 0-9 and A-Z)"))
}

/// The JSON answers of the queue commands, the same whether the running
/// queue manager answered (admin socket) or the spool was read offline
/// (`postern queue --offline`).
pub mod answer {
    use postern_delivery::{QueueDetail, QueueEntry};
    use postern_spool::QueueId;
    use serde_json::{Value, json};

    pub fn list(mut messages: Vec<QueueEntry>, quarantined_only: bool) -> Value {
        if quarantined_only {
            messages.retain(|e| e.state == "quarantined");
        }
        json!({"ok": true, "messages": messages})
    }

    pub fn show(id: &QueueId, detail: Option<QueueDetail>) -> Value {
        match detail {
            Some(m) => json!({"ok": true, "message": m}),
            None => json!({"ok": false, "error": format!("no queued message {id}")}),
        }
    }

    pub fn flush(n: usize) -> Value {
        json!({"ok": true, "flushed": n})
    }

    pub fn release(id: &QueueId, released: bool) -> Value {
        match released {
            true => json!({"ok": true, "released": id.to_string()}),
            false => json!({"ok": false, "error": format!("no quarantined message {id}")}),
        }
    }

    pub fn delete(id: &QueueId, deleted: bool) -> Value {
        match deleted {
            true => json!({"ok": true, "deleted": id.to_string()}),
            false => json!({"ok": false, "error": format!("no queued message {id}")}),
        }
    }
}

const USAGE: &str = "usage: queue list [--quarantined] | queue show ID | queue flush | queue release ID | queue delete ID";

/// Answer `queue ...` on the admin socket.
pub async fn serve(q: &QueueHandle, line: &str) -> Value {
    let words: Vec<&str> = line.split_whitespace().collect();
    let result: Result<Value, String> = async {
        Ok(match words.as_slice() {
            ["queue", "list"] => answer::list(q.list().await?, false),
            ["queue", "list", "--quarantined"] => answer::list(q.list().await?, true),
            ["queue", "show", id] => {
                let id = parse_id(id)?;
                answer::show(&id, q.show(&id).await?)
            }
            ["queue", "flush"] => answer::flush(q.flush().await?),
            ["queue", "release", id] => {
                let id = parse_id(id)?;
                answer::release(&id, q.release(&id).await?)
            }
            ["queue", "delete", id] => {
                let id = parse_id(id)?;
                answer::delete(&id, q.delete(&id).await?)
            }
            _ => return Err(USAGE.to_string()),
        })
    }
    .await;
    result.unwrap_or_else(|e| json!({"ok": false, "error": e}))
}
