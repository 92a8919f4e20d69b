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

/// Answer `queue ...` on the admin socket.
pub async fn serve(q: &QueueHandle, line: &str) -> Value {
    let words: Vec<&str> = line.split_whitespace().collect();
    let result = match words.as_slice() {
        ["queue", "list"] => q.list().await.map(|m| json!({"messages": m})),
        ["queue", "list", "--quarantined"] => q.list().await.map(|m| {
            let held: Vec<_> = m.into_iter().filter(|e| e.state == "quarantined").collect();
            json!({"messages": held})
        }),
        ["queue", "release", id] => match parse_id(id) {
            Ok(id) => match q.release(&id).await {
                Ok(true) => Ok(json!({"released": id.to_string()})),
                Ok(false) => Err(format!("no quarantined message {id}")),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        },
        ["queue", "show", id] => match parse_id(id) {
            Ok(id) => match q.show(&id).await {
                Ok(Some(m)) => Ok(json!({"message": m})),
                Ok(None) => Err(format!("no queued message {id}")),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        },
        ["queue", "flush"] => q.flush().await.map(|n| json!({"flushed": n})),
        ["queue", "delete", id] => match parse_id(id) {
            Ok(id) => match q.delete(&id).await {
                Ok(true) => Ok(json!({"deleted": id.to_string()})),
                Ok(false) => Err(format!("no queued message {id}")),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        },
        _ => Err(
            "usage: queue list [--quarantined] | queue show ID | queue flush | queue release ID | queue delete ID"
                .to_string(),
        ),
    };
    match result {
        Ok(Value::Object(mut map)) => {
            map.insert("ok".into(), json!(true));
            Value::Object(map)
        }
        Ok(other) => json!({"ok": true, "result": other}),
        Err(e) => json!({"ok": false, "error": e}),
    }
}
