//! DNSSEC-aware look-ups for DANE (RFC 7672): one query with the AD and DO
//! bits set (RFC 6840 §5.7) to the operator's resolver, over UDP with a TCP
//! retry when truncated, and the AD bit of the reply as the answer's security.
//!
//! What it trusts: the resolvers of `[dns] nameservers` (or the system's), which
//! must validate DNSSEC and be reached over a trusted path (loopback): the AD
//! bit is not authenticated on the wire. This is Postfix's model
//! (`smtp_dns_support_level = dnssec`). A SERVFAIL (a validating resolver's
//! answer to bogus data) or any other failure is temporary, so DANE defers.
//! Input: replies from the network (untrusted: the id, the flags and the
//! question must match the query; sizes are bounded by the message format).

use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use postern_capability::{DnsFailure, DnssecAnswer, DnssecQuery, TlsaRecord};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

fn temporary(text: impl Into<String>) -> DnsFailure {
    DnsFailure::Temporary(text.into())
}

/// The query message for `name`/`rtype` with a random id, RD, AD and DO.
fn query_message(name: &Name, rtype: RecordType) -> Message {
    let mut m = Message::new(rand::random(), MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.metadata.authentic_data = true;
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    edns.set_dnssec_ok(true);
    m.set_edns(edns);
    m.add_query(Query::query(name.clone(), rtype));
    m
}

async fn exchange_udp(
    server: SocketAddr,
    wire: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().unwrap()
    } else {
        "[::]:0".parse().unwrap()
    };
    let sock = UdpSocket::bind(bind).await.map_err(|e| e.to_string())?;
    sock.connect(server).await.map_err(|e| e.to_string())?;
    sock.send(wire).await.map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 65535];
    let n = tokio::time::timeout(timeout, sock.recv(&mut buf))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    buf.truncate(n);
    Ok(buf)
}

async fn exchange_tcp(
    server: SocketAddr,
    wire: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let work = async {
        let mut s = TcpStream::connect(server).await?;
        let mut out = (wire.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(wire);
        s.write_all(&out).await?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len).await?;
        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())
}

/// A reply that answers `query` (same id and question), or why not.
/// One exchange with `server` over UDP or TCP, and its checked reply.
async fn ask(
    server: SocketAddr,
    query: &Message,
    wire: &[u8],
    timeout: Duration,
    tcp: bool,
) -> Result<Message, String> {
    let (bytes, via) = match tcp {
        true => (exchange_tcp(server, wire, timeout).await, " (TCP)"),
        false => (exchange_udp(server, wire, timeout).await, ""),
    };
    bytes
        .and_then(|b| parse_reply(query, &b))
        .map_err(|e| format!("{server}{via}: {e}"))
}

fn parse_reply(query: &Message, wire: &[u8]) -> Result<Message, String> {
    let reply = Message::from_vec(wire).map_err(|e| format!("bad reply: {e}"))?;
    if reply.metadata.id != query.metadata.id
        || reply.metadata.message_type != MessageType::Response
        || reply.queries != query.queries
    {
        return Err("reply does not match the query".into());
    }
    Ok(reply)
}

/// Ask `servers` in order for `q`; the first usable reply wins.
pub async fn lookup(
    servers: &[SocketAddr],
    timeout: Duration,
    q: DnssecQuery,
) -> Result<DnssecAnswer, DnsFailure> {
    let (name, rtype) = match &q {
        DnssecQuery::Mx(n) => (n, RecordType::MX),
        DnssecQuery::A(n) => (n, RecordType::A),
        DnssecQuery::Aaaa(n) => (n, RecordType::AAAA),
        DnssecQuery::Tlsa(n) => (n, RecordType::TLSA),
    };
    let fq = if name.ends_with('.') {
        name.clone()
    } else {
        format!("{name}.")
    };
    let name = Name::from_ascii(&fq)
        .map_err(|e| DnsFailure::Invalid(format!("{fq:?} is not a domain name: {e}")))?;
    if servers.is_empty() {
        return Err(temporary("no nameservers for DNSSEC look-ups"));
    }
    let mut last = String::new();
    for server in servers {
        let query = query_message(&name, rtype);
        let wire = query.to_vec().map_err(|e| temporary(e.to_string()))?;
        let mut reply = ask(*server, &query, &wire, timeout, false).await;
        if matches!(&reply, Ok(r) if r.metadata.truncation) {
            reply = ask(*server, &query, &wire, timeout, true).await;
        }
        match reply {
            Ok(r) => return answer(&r, rtype),
            Err(e) => last = e,
        }
    }
    Err(temporary(last))
}

/// The answer in `reply`: records of `rtype` (after any CNAME), and AD.
fn answer(reply: &Message, rtype: RecordType) -> Result<DnssecAnswer, DnsFailure> {
    let secure = reply.metadata.authentic_data;
    match reply.metadata.response_code {
        ResponseCode::NoError => {}
        ResponseCode::NXDomain => {
            return Ok(DnssecAnswer {
                secure,
                ..DnssecAnswer::default()
            });
        }
        other => return Err(temporary(format!("the resolver answered {other}"))),
    }
    let mut out = DnssecAnswer {
        secure,
        ..DnssecAnswer::default()
    };
    for r in &reply.answers {
        if r.record_type() != rtype {
            continue;
        }
        out.count += 1;
        if let RData::TLSA(t) = &r.data {
            out.tlsa.push(TlsaRecord {
                usage: u8::from(t.cert_usage),
                selector: u8::from(t.selector),
                matching: u8::from(t.matching),
                data: t.cert_data.clone(),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_ask_for_validation() {
        let name = Name::from_ascii("_25._tcp.mx.example.").unwrap();
        let m = query_message(&name, RecordType::TLSA);
        assert!(m.metadata.authentic_data && m.metadata.recursion_desired);
        assert!(m.edns.as_ref().unwrap().flags().dnssec_ok);
        let wire = m.to_vec().unwrap();
        // A reply with another id is refused.
        let mut r = Message::from_vec(&wire).unwrap();
        r.metadata.message_type = MessageType::Response;
        assert!(parse_reply(&m, &r.to_vec().unwrap()).is_ok());
        r.metadata.id = r.metadata.id.wrapping_add(1);
        assert!(parse_reply(&m, &r.to_vec().unwrap()).is_err());
    }

    #[test]
    fn security_and_failures() {
        let name = Name::from_ascii("mx.example.").unwrap();
        let mut r = query_message(&name, RecordType::MX);
        r.metadata.message_type = MessageType::Response;
        r.metadata.authentic_data = false;
        let a = answer(&r, RecordType::MX).unwrap();
        assert!(!a.secure && a.count == 0);
        r.metadata.authentic_data = true;
        assert!(answer(&r, RecordType::MX).unwrap().secure);
        r.metadata.response_code = ResponseCode::ServFail;
        assert!(matches!(
            answer(&r, RecordType::MX),
            Err(DnsFailure::Temporary(_))
        ));
    }
}
