//! Runs the cargo-fuzz invariants (`fuzz/invariants.rs`) over a few thousand
//! pseudo-random inputs in plain `cargo test`, without extra dependencies. Trusts
//! no input: the inputs are deliberately hostile byte soups and mutated valid
//! commands. Exercises RFC 5321 §4.1 parsing and §4.1.1.4 / §4.5.2 DATA handling.

#[path = "../fuzz/invariants.rs"]
mod invariants;

/// xorshift64: tiny deterministic PRNG.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a [u8]]) -> &'a [u8] {
        items[self.below(items.len())]
    }
}

const COMMAND_PIECES: &[&[u8]] = &[
    b"MAIL FROM:",
    b"RCPT TO:",
    b"mail from: ",
    b"EHLO ",
    b"HELO ",
    b"AUTH ",
    b"VRFY ",
    b"DATA",
    b"<",
    b">",
    b"<>",
    b"@",
    b"\"",
    b"\\",
    b".",
    b" ",
    b"  ",
    b"a",
    b"Zz9",
    b"example.com",
    b"[",
    b"]",
    b"IPv6:",
    b"::1",
    b"2001:db8::",
    b"192.0.2.1",
    b"tag:",
    b"\xc3\xbc",
    b"\xe7\x94\xa8",
    b"\xff",
    b"\xc2\x85",
    b"\r",
    b"\n",
    b"\0",
    b"\x7f",
    b"SIZE=",
    b"123",
    b"=",
    b"BODY=8BITMIME",
    b"SMTPUTF8",
    b"Postmaster",
    b",",
    b":",
    b"%",
    b"!",
    b"-",
    b"+",
    &[b'x'; 70],
];

const SEEDS: &[&[u8]] = &[
    b"MAIL FROM:<user@example.com> SIZE=1000 BODY=8BITMIME",
    b"MAIL FROM:<\"quoted\\\" local\"@[192.0.2.1]>",
    b"MAIL FROM:<@route.example,@b.example:user%x@c.example.>",
    b"RCPT TO:<u@[IPv6:2001:db8::1]> NOTIFY=NEVER ORCPT=rfc822;u@x",
    b"RCPT TO:<\xc3\xbc@b\xc3\xbccher.example>",
    b"RCPT TO:<Postmaster>",
    b"RCPT TO:<a@[tag:con>tent]>",
    b"EHLO mx.example.com",
    b"AUTH PLAIN AGFsaWNlAHNlY3JldA==",
    b"MAIL FROM:<>",
];

fn random_command(rng: &mut Rng) -> Vec<u8> {
    if rng.below(2) == 0 {
        let n = rng.below(12);
        (0..n)
            .flat_map(|_| rng.pick(COMMAND_PIECES).to_vec())
            .collect()
    } else {
        let mut v = rng.pick(SEEDS).to_vec();
        for _ in 0..=rng.below(3) {
            let pos = rng.below(v.len() + 1);
            match rng.below(3) {
                0 if pos < v.len() => {
                    v.remove(pos);
                }
                1 if pos < v.len() => v[pos] = rng.next() as u8,
                _ => {
                    let piece = rng.pick(COMMAND_PIECES);
                    v.splice(pos..pos, piece.iter().copied());
                }
            }
        }
        v
    }
}

#[test]
fn command_invariants_on_random_inputs() {
    let mut rng = Rng(seed(0x9E37_79B9_7F4A_7C15));
    let mut parsed_paths = 0;
    for _ in 0..iterations() {
        let input = random_command(&mut rng);
        invariants::check_command(&input);
        if matches!(
            postern_protocol::parse_command(&input),
            Ok(postern_protocol::Command::MailFrom { .. }
                | postern_protocol::Command::RcptTo { .. })
        ) {
            parsed_paths += 1;
        }
    }
    assert!(
        parsed_paths > 100,
        "generator too weak: {parsed_paths} valid paths"
    );
}

/// Pieces that may form bare CR / bare LF (smuggling attempts).
const DIRTY_PIECES: &[&[u8]] = &[
    b"\r", b"\n", b".", b"\r\n", b"\r\n", b"x", b"hello ", b"\0", b"..", b"\r\n.", b"\n.\n",
    b"\r.\r", b"\r\n.\r", b"\r\n.\n", b"\xff",
];

/// Pieces that always form well-ended lines once followed by CRLF.
const CLEAN_PIECES: &[&[u8]] = &[b".", b"..", b"\r\n", b"\r\n.", b"x", b"hello ", b"\xff"];

/// Well-ended lines, sometimes with a NUL octet.
const NUL_PIECES: &[&[u8]] = &[
    b".", b"..", b"\r\n", b"\r\n.", b"x", b"hello ", b"\0", b"\xff",
];

fn random_data(rng: &mut Rng) -> Vec<u8> {
    let mut v: Vec<u8> = (0..3).map(|_| rng.next() as u8).collect();
    if rng.below(2) == 0 {
        v[2] %= 16; // small size limits: TooBig
    }
    let pieces = match rng.below(4) {
        0 => DIRTY_PIECES,
        1 => NUL_PIECES,
        _ => CLEAN_PIECES,
    };
    let n = rng.below(40);
    for _ in 0..n {
        match rng.below(40) {
            0 => v.extend_from_slice(b"\r\n.\r\n"),
            1 => v.extend(std::iter::repeat_n(b'y', 990 + rng.below(20))),
            _ => v.extend_from_slice(rng.pick(pieces)),
        }
    }
    if rng.below(2) == 0 {
        v.extend_from_slice(b"\r\n.\r\n");
    }
    v
}

#[test]
fn data_invariants_on_random_inputs() {
    use postern_protocol::{DataOutcome, DataReader};
    let mut rng = Rng(seed(0xD1B5_4A32_D192_ED03));
    let mut seen = [0usize; 6];
    for _ in 0..iterations() {
        let input = random_data(&mut rng);
        invariants::check_data(&input);
        invariants::check_chunks(&input);
        let mut reader = DataReader::new(u64::from(input[2]) * 8);
        let done = reader.feed(&input[3..], &mut Vec::new()).done;
        let slot = match (done, reader.outcome()) {
            (false, _) => 0,
            (true, DataOutcome::Complete) => 1,
            (true, DataOutcome::TooBig) => 2,
            (true, DataOutcome::BareLineEnding) => 3,
            (true, DataOutcome::LineTooLong) => 4,
            (true, DataOutcome::Nul) => 5,
        };
        seen[slot] += 1;
    }
    assert!(
        seen.iter().all(|&n| n > 10),
        "generator misses cases: {seen:?}"
    );
}

/// Iterations per randomized test; `POSTERN_FUZZ_ITERS` raises it for long local runs.
fn iterations() -> usize {
    std::env::var("POSTERN_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6000)
}

/// Base seed, or `POSTERN_FUZZ_SEED` to explore other sequences.
fn seed(default: u64) -> u64 {
    std::env::var("POSTERN_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
        | 1
}

#[test]
fn invariants_accept_degenerate_inputs() {
    for input in [
        &b""[..],
        b"\r",
        b"\n",
        b".\r\n",
        b"\0\0\0.\r\n",
        b"\xff\xff\xff",
    ] {
        invariants::check_command(input);
        invariants::check_data(input);
        invariants::check_chunks(input);
    }
}
