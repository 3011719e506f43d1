// ANCHOR: module
//! The commands: a table of names, argument counts and functions, in the
//! shape of Redis's own (`commands.def`), and each command's code.
//!
//! Every reply is Redis's, to the byte, errors included: clients compare
//! error texts (redis-cli prints them, libraries map them to exceptions),
//! so "close enough" is a bug. The tests run the same script against this
//! server and against `redis-server` and compare what `redis-cli` prints.

use crate::db::{now_ms, Db, Ttl};
use crate::resp::{parse_integer, Reply, Request, HEADER_BOUND};

// ANCHOR: table
/// One command: what `COMMAND` reports about it, and its code.
pub struct Command {
    /// Lower case, as Redis's errors name it.
    pub name: &'static str,
    /// Redis's convention: `n` arguments exactly (the name counts), or at
    /// least `-n`.
    arity: i32,
    flags: &'static [&'static str],
    /// Which arguments are keys: first, last (-1: the last one), step.
    keys: (i32, i32, i32),
    run: fn(&mut Call),
    /// The most bytes its reply can take, known before it runs.
    bound: fn(&Call) -> usize,
}

/// What a command works with.
pub struct Call<'a> {
    pub request: Request<'a>,
    pub db: &'a mut Db,
    pub session: &'a mut Session,
    /// The replies to send, this one appended.
    pub out: &'a mut Vec<u8>,
}

/// What the server knows of one connection, for CLIENT and HELLO.
#[derive(Debug, Default)]
pub struct Session {
    pub id: u64,
    name: Option<Box<[u8]>>,
    /// QUIT was called: close once its reply is sent.
    pub quit: bool,
}

impl Session {
    pub fn new(id: u64) -> Session {
        Session {
            id,
            ..Session::default()
        }
    }
}

/// In the order we expect to see them most: a lookup tries them in turn.
pub static COMMANDS: &[Command] = &[
    cmd("get", 2, &["readonly", "fast"], (1, 1, 1), get, value_bound),
    cmd("set", -3, &["write", "denyoom"], (1, 1, 1), set, small),
    cmd("ping", -1, &["fast"], (0, 0, 0), ping, arg1_bound),
    cmd(
        "incr",
        2,
        &["write", "denyoom", "fast"],
        (1, 1, 1),
        incr,
        small,
    ),
    cmd("mset", -3, &["write", "denyoom"], (1, -1, 2), mset, small),
    cmd(
        "mget",
        -2,
        &["readonly", "fast"],
        (1, -1, 1),
        mget,
        mget_bound,
    ),
    cmd("del", -2, &["write"], (1, -1, 1), del, small),
    cmd(
        "exists",
        -2,
        &["readonly", "fast"],
        (1, -1, 1),
        exists,
        small,
    ),
    cmd(
        "incrby",
        3,
        &["write", "denyoom", "fast"],
        (1, 1, 1),
        incrby,
        small,
    ),
    cmd(
        "decr",
        2,
        &["write", "denyoom", "fast"],
        (1, 1, 1),
        decr,
        small,
    ),
    cmd(
        "decrby",
        3,
        &["write", "denyoom", "fast"],
        (1, 1, 1),
        decrby,
        small,
    ),
    cmd("expire", -3, &["write", "fast"], (1, 1, 1), expire, small),
    cmd("pexpire", -3, &["write", "fast"], (1, 1, 1), pexpire, small),
    cmd("ttl", 2, &["readonly", "fast"], (1, 1, 1), ttl, small),
    cmd("pttl", 2, &["readonly", "fast"], (1, 1, 1), pttl, small),
    cmd("persist", 2, &["write", "fast"], (1, 1, 1), persist, small),
    cmd("echo", 2, &["fast"], (0, 0, 0), echo, arg1_bound),
    cmd("dbsize", 1, &["readonly", "fast"], (0, 0, 0), dbsize, small),
    cmd("flushall", -1, &["write"], (0, 0, 0), flushall, small),
    cmd("quit", -1, &["fast"], (0, 0, 0), quit, small),
    cmd(
        "command",
        -1,
        &["loading", "stale"],
        (0, 0, 0),
        command,
        command_bound,
    ),
    cmd(
        "config",
        -2,
        &["admin", "loading", "stale"],
        (0, 0, 0),
        config,
        small,
    ),
    cmd("hello", -1, &["fast", "no_auth"], (0, 0, 0), hello, small),
    cmd(
        "client",
        -2,
        &["loading", "stale"],
        (0, 0, 0),
        client,
        client_bound,
    ),
];

const fn cmd(
    name: &'static str,
    arity: i32,
    flags: &'static [&'static str],
    keys: (i32, i32, i32),
    run: fn(&mut Call),
    bound: fn(&Call) -> usize,
) -> Command {
    Command {
        name,
        arity,
        flags,
        keys,
        run,
        bound,
    }
}

fn lookup(name: &[u8]) -> Option<&'static Command> {
    COMMANDS
        .iter()
        .find(|c| c.name.as_bytes().eq_ignore_ascii_case(name))
}
// ANCHOR_END: table

// ANCHOR: execute
/// The most a connection's replies may take at once: what its write buffer
/// holds. A command runs only when its reply has room behind the replies
/// already waiting; otherwise it waits until they are sent.
pub const MAX_REPLIES: usize = crate::buffer::MAX_CAPACITY;

/// What came of a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It ran, and its reply is in `out`.
    Replied,
    /// Its reply might not fit in `room`: it has not run. Send the replies
    /// before it, then try again.
    NoRoom,
}

/// Runs one request, if its reply can take no more than `room` bytes.
pub fn execute(
    request: Request,
    db: &mut Db,
    session: &mut Session,
    out: &mut Vec<u8>,
    room: usize,
) -> Outcome {
    let mut call = Call {
        request,
        db,
        session,
        out,
    };
    let command = lookup(request.arg(0));
    let runnable = command.filter(|c| arity_ok(c.arity, request.len()));
    // Errors are short: SMALL_REPLY bounds them.
    let bound = runnable.map_or(SMALL_REPLY, |c| (c.bound)(&call));
    if bound > room {
        if room < MAX_REPLIES {
            return Outcome::NoRoom;
        }
        // Even alone it would not fit: MGET of many large values, say.
        // Redis would build it; we refuse, to keep memory bounded.
        let error = format!("ERR reply would exceed the {MAX_REPLIES}-byte limit");
        call.out.error(error.as_bytes());
        return Outcome::Replied;
    }
    let before = call.out.len();
    match (command, runnable) {
        (None, _) => unknown_command(&call.request, call.out),
        (Some(c), None) => arity_error(c.name, call.out),
        (Some(_), Some(c)) => (c.run)(&mut call),
    }
    // The bounds are the memory bound: a test build checks every one.
    debug_assert!(call.out.len() - before <= bound, "a reply beyond its bound");
    Outcome::Replied
}

fn arity_ok(arity: i32, argc: usize) -> bool {
    let argc = argc as i64;
    let arity = i64::from(arity);
    (arity >= 0 && argc == arity) || (arity < 0 && argc >= -arity)
}
// ANCHOR_END: execute

// ANCHOR: errors
/// Redis's text for a name it does not know, the first arguments quoted
/// up to about 128 characters. Redis formats them with `%s`, so an
/// argument ends at its first zero byte.
fn unknown_command(request: &Request, out: &mut Vec<u8>) {
    let c_string = |arg: &[u8]| arg.split(|&b| b == 0).next().unwrap_or_default().to_vec();
    let mut name = c_string(request.arg(0));
    name.truncate(128);
    let mut args = Vec::new();
    for arg in request.args(1) {
        if args.len() >= 128 {
            break;
        }
        let mut arg = c_string(arg);
        arg.truncate(128 - args.len());
        args.push(b'\'');
        args.extend_from_slice(&arg);
        args.extend_from_slice(b"' ");
    }
    let text = [
        b"ERR unknown command '".as_slice(),
        &name,
        b"', with args beginning with: ",
        &args,
    ]
    .concat();
    out.error(&text);
}

fn arity_error(name: &str, out: &mut Vec<u8>) {
    out.error(format!("ERR wrong number of arguments for '{name}' command").as_bytes());
}

fn unknown_subcommand(call: &mut Call) {
    let mut sub = call.request.arg(1).to_vec();
    sub.truncate(128);
    let command = call.request.arg(0).to_ascii_uppercase();
    let text = [
        b"ERR unknown subcommand '".as_slice(),
        &sub,
        b"'. Try ",
        &command,
        b" HELP.",
    ]
    .concat();
    call.out.error(&text);
}

const SYNTAX_ERROR: &[u8] = b"ERR syntax error";
const NOT_AN_INTEGER: &[u8] = b"ERR value is not an integer or out of range";
// ANCHOR_END: errors

// ANCHOR: bounds
/// A bound for replies of a few fixed words or numbers, and for errors.
pub const SMALL_REPLY: usize = 1024;

fn small(_: &Call) -> usize {
    SMALL_REPLY
}

/// GET: the value's bulk string.
fn value_bound(call: &Call) -> usize {
    HEADER_BOUND + call.db.peek_len(call.request.arg(1)) + 2
}

/// MGET: an array of bulk strings, one per key.
fn mget_bound(call: &Call) -> usize {
    let keys = call.request.args(1);
    HEADER_BOUND
        + keys
            .map(|k| HEADER_BOUND + call.db.peek_len(k) + 2)
            .sum::<usize>()
}

/// PING and ECHO: their argument back.
fn arg1_bound(call: &Call) -> usize {
    let echoed = call.request.args(1).next().map_or(0, <[u8]>::len);
    SMALL_REPLY + echoed
}
// ANCHOR_END: bounds

// ANCHOR: strings
fn get(call: &mut Call) {
    match call.db.get(call.request.arg(1)) {
        Some(value) => call.out.bulk(value),
        None => call.out.null(),
    }
}

/// SET key value [NX|XX] [EX seconds|PX milliseconds|KEEPTTL]
fn set(call: &mut Call) {
    let request = call.request;
    let (key, value) = (request.arg(1), request.arg(2));
    let (mut nx, mut xx, mut keep_ttl) = (false, false, false);
    let mut expire: Option<(&[u8], i64)> = None; // the number, and ms per unit
    let mut i = 3;
    // Redis reads every option before it reads a number.
    while i < request.len() {
        let option = request.arg(i).to_ascii_uppercase();
        let next = (i + 1 < request.len()).then(|| request.arg(i + 1));
        match (option.as_slice(), next) {
            (b"NX", _) if !xx => nx = true,
            (b"XX", _) if !nx => xx = true,
            (b"KEEPTTL", _) if expire.is_none() => keep_ttl = true,
            (b"EX", Some(n)) if expire.is_none() && !keep_ttl => {
                expire = Some((n, 1000));
                i += 1;
            }
            (b"PX", Some(n)) if expire.is_none() && !keep_ttl => {
                expire = Some((n, 1));
                i += 1;
            }
            _ => return call.out.error(SYNTAX_ERROR),
        }
        i += 1;
    }
    let deadline = match expire {
        None => None,
        Some((number, unit)) => match parse_integer(number) {
            None => return call.out.error(NOT_AN_INTEGER),
            Some(n) => match deadline_after(n, unit) {
                Some(at) if n > 0 => Some(at),
                _ => return call.out.error(b"ERR invalid expire time in 'set' command"),
            },
        },
    };
    if nx || xx {
        let exists = call.db.contains(key);
        if (nx && exists) || (xx && !exists) {
            return call.out.null();
        }
    }
    call.db.set(key, value.into(), keep_ttl);
    if let Some(at) = deadline {
        call.db.set_deadline(key, at);
    }
    call.out.simple("OK");
}

/// `n` units of `unit_ms` from now, as a Unix time in ms; `None` if that
/// overflows, as Redis checks.
fn deadline_after(n: i64, unit_ms: i64) -> Option<i64> {
    n.checked_mul(unit_ms)?.checked_add(now_ms())
}

fn mget(call: &mut Call) {
    let keys = call.request.args(1);
    call.out.array(keys.len());
    for key in keys {
        match call.db.get(key) {
            Some(value) => call.out.bulk(value),
            None => call.out.null(),
        }
    }
}

fn mset(call: &mut Call) {
    if call.request.len().is_multiple_of(2) {
        return arity_error("mset", call.out);
    }
    let mut args = call.request.args(1);
    while let (Some(key), Some(value)) = (args.next(), args.next()) {
        call.db.set(key, value.into(), false);
    }
    call.out.simple("OK");
}
// ANCHOR_END: strings

// ANCHOR: incr
fn incr(call: &mut Call) {
    add(call, 1);
}

fn decr(call: &mut Call) {
    add(call, -1);
}

fn incrby(call: &mut Call) {
    match parse_integer(call.request.arg(2)) {
        Some(n) => add(call, n),
        None => call.out.error(NOT_AN_INTEGER),
    }
}

fn decrby(call: &mut Call) {
    match parse_integer(call.request.arg(2)) {
        // Its negation would not fit in an i64.
        Some(i64::MIN) => call.out.error(b"ERR decrement would overflow"),
        Some(n) => add(call, -n),
        None => call.out.error(NOT_AN_INTEGER),
    }
}

/// INCR and friends: the value is a string that must read as an integer.
/// A missing key counts as 0; a deadline the key has stays.
fn add(call: &mut Call, delta: i64) {
    let key = call.request.arg(1);
    let current = match call.db.get(key) {
        None => 0,
        Some(value) => match parse_integer(value) {
            Some(n) => n,
            None => return call.out.error(NOT_AN_INTEGER),
        },
    };
    let Some(new) = current.checked_add(delta) else {
        return call.out.error(b"ERR increment or decrement would overflow");
    };
    let mut digits = Vec::with_capacity(20);
    crate::resp::push_decimal(&mut digits, new);
    call.db.set(key, digits.into(), true);
    call.out.integer(new);
}
// ANCHOR_END: incr

fn del(call: &mut Call) {
    let mut deleted = 0;
    for key in call.request.args(1) {
        deleted += i64::from(call.db.remove(key));
    }
    call.out.integer(deleted);
}

fn exists(call: &mut Call) {
    let mut found = 0;
    for key in call.request.args(1) {
        found += i64::from(call.db.contains(key));
    }
    call.out.integer(found);
}

// ANCHOR: expire
fn expire(call: &mut Call) {
    expire_in(call, "expire", 1000);
}

fn pexpire(call: &mut Call) {
    expire_in(call, "pexpire", 1);
}

/// EXPIRE key seconds [NX|XX|GT|LT]; a time already past deletes the key.
fn expire_in(call: &mut Call, name: &str, unit_ms: i64) {
    let request = call.request;
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for option in request.args(3) {
        match option.to_ascii_uppercase().as_slice() {
            b"NX" => nx = true,
            b"XX" => xx = true,
            b"GT" => gt = true,
            b"LT" => lt = true,
            _ => {
                let text = [b"ERR Unsupported option ".as_slice(), option].concat();
                return call.out.error(&text);
            }
        }
    }
    if nx && (xx || gt || lt) {
        return call
            .out
            .error(b"ERR NX and XX, GT or LT options at the same time are not compatible");
    }
    if gt && lt {
        return call
            .out
            .error(b"ERR GT and LT options at the same time are not compatible");
    }
    let Some(n) = parse_integer(request.arg(2)) else {
        return call.out.error(NOT_AN_INTEGER);
    };
    let Some(at) = deadline_after(n, unit_ms) else {
        let text = format!("ERR invalid expire time in '{name}' command");
        return call.out.error(text.as_bytes());
    };
    let key = request.arg(1);
    let Some(current) = call.db.deadline(key) else {
        return call.out.integer(0);
    };
    // GT treats no deadline as an infinite one, LT does too.
    let refused = (nx && current.is_some())
        || (xx && current.is_none())
        || (gt && current.is_none_or(|c| at <= c))
        || (lt && current.is_some_and(|c| at >= c));
    if refused {
        return call.out.integer(0);
    }
    if at <= now_ms() {
        call.db.remove(key);
    } else {
        call.db.set_deadline(key, at);
    }
    call.out.integer(1);
}

fn ttl(call: &mut Call) {
    time_to_live(call, false);
}

fn pttl(call: &mut Call) {
    time_to_live(call, true);
}

fn time_to_live(call: &mut Call, in_ms: bool) {
    let reply = match call.db.ttl(call.request.arg(1)) {
        Ttl::NoKey => -2,
        Ttl::Forever => -1,
        Ttl::Left(ms) if in_ms => ms,
        // Rounded to the nearest second, as Redis does.
        Ttl::Left(ms) => (ms + 500) / 1000,
    };
    call.out.integer(reply);
}

fn persist(call: &mut Call) {
    let persisted = call.db.persist(call.request.arg(1));
    call.out.integer(i64::from(persisted));
}
// ANCHOR_END: expire

fn ping(call: &mut Call) {
    match call.request.len() {
        1 => call.out.simple("PONG"),
        2 => call.out.bulk(call.request.arg(1)),
        _ => arity_error("ping", call.out),
    }
}

fn echo(call: &mut Call) {
    call.out.bulk(call.request.arg(1));
}

fn dbsize(call: &mut Call) {
    call.out.integer(call.db.len() as i64);
}

fn flushall(call: &mut Call) {
    match call.request.args(1).next() {
        None => {}
        Some(mode) if mode.eq_ignore_ascii_case(b"sync") || mode.eq_ignore_ascii_case(b"async") => {
        }
        Some(_) => return call.out.error(SYNTAX_ERROR),
    }
    call.db.clear();
    call.out.simple("OK");
}

fn quit(call: &mut Call) {
    call.session.quit = true;
    call.out.simple("OK");
}

// ANCHOR: client_support
// ANCHOR: command
/// COMMAND [COUNT | INFO name... | DOCS name...]: what clients ask about
/// the server's commands. redis-cli asks `COMMAND DOCS` at start for its
/// hints, and gets none here (an empty map: it copes).
fn command(call: &mut Call) {
    let request = call.request;
    let Some(sub) = request.args(1).next() else {
        call.out.array(COMMANDS.len());
        COMMANDS.iter().for_each(|c| describe(c, call.out));
        return;
    };
    match sub.to_ascii_uppercase().as_slice() {
        b"COUNT" if request.len() == 2 => call.out.integer(COMMANDS.len() as i64),
        b"COUNT" => arity_error("command|count", call.out),
        b"INFO" => {
            call.out.array(request.len() - 2);
            for name in request.args(2) {
                match lookup(name) {
                    Some(c) => describe(c, call.out),
                    None => call.out.null(),
                }
            }
        }
        b"DOCS" => call.out.array(0),
        _ => unknown_subcommand(call),
    }
}
// ANCHOR_END: command

/// A command as Redis 7 describes it: name, arity, flags, first key, last
/// key, step, then ACL categories, tips, key specs and subcommands, which
/// we leave empty.
fn describe(command: &Command, out: &mut Vec<u8>) {
    out.array(10);
    out.bulk(command.name.as_bytes());
    out.integer(command.arity.into());
    out.array(command.flags.len());
    command.flags.iter().for_each(|flag| out.simple(flag));
    let (first, last, step) = command.keys;
    for n in [first, last, step] {
        out.integer(n.into());
    }
    for _ in 0..4 {
        out.array(0);
    }
}

/// The most one `describe` writes; checked by a test.
const DESCRIBE_BOUND: usize = 256;

fn command_bound(call: &Call) -> usize {
    SMALL_REPLY + DESCRIBE_BOUND * COMMANDS.len().max(call.request.len())
}

/// The parameters CONFIG GET knows, with the values that describe this
/// server: redis-benchmark asks for `save` and `appendonly` at start.
const CONFIG: &[(&str, &str)] = &[
    ("save", ""),
    ("appendonly", "no"),
    ("databases", "1"),
    ("maxmemory", "0"),
];

/// CONFIG GET pattern...: the parameters that match any pattern (`*` and
/// `?` as in Redis's glob), name and value, in a flat array.
fn config(call: &mut Call) {
    let request = call.request;
    if request.arg(1).eq_ignore_ascii_case(b"set") && request.len() >= 3 {
        // We have no parameter anyone may set: all are unknown.
        let text = [
            b"ERR Unknown option or number of arguments for CONFIG SET - '".as_slice(),
            request.arg(2),
            b"'",
        ];
        return call.out.error(&text.concat());
    }
    if !request.arg(1).eq_ignore_ascii_case(b"get") {
        return unknown_subcommand(call);
    }
    if request.len() < 3 {
        return arity_error("config|get", call.out);
    }
    let matching: Vec<_> = CONFIG
        .iter()
        .filter(|(name, _)| request.args(2).any(|p| glob(p, name.as_bytes())))
        .collect();
    call.out.array(2 * matching.len());
    for (name, value) in matching {
        call.out.bulk(name.as_bytes());
        call.out.bulk(value.as_bytes());
    }
}

/// `*` and `?` patterns, without case (enough for parameter names).
fn glob(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.split_first(), name.split_first()) {
        (None, None) => true,
        (Some((b'*', rest)), _) => {
            glob(rest, name) || name.split_first().is_some_and(|(_, n)| glob(pattern, n))
        }
        (Some((p, prest)), Some((n, nrest))) => {
            (*p == b'?' || p.eq_ignore_ascii_case(n)) && glob(prest, nrest)
        }
        _ => false,
    }
}

/// HELLO [protover [AUTH user pass] [SETNAME name]]: the handshake of
/// newer clients. We speak RESP2 only, so HELLO 3 gets the error that
/// tells a client to stay on RESP2.
fn hello(call: &mut Call) {
    let request = call.request;
    if let Some(version) = request.args(1).next() {
        match parse_integer(version) {
            Some(2) => {}
            Some(_) => return call.out.error(b"NOPROTO unsupported protocol version"),
            None => {
                return call
                    .out
                    .error(b"ERR Protocol version is not an integer or out of range")
            }
        }
    }
    let mut i = 2;
    while i < request.len() {
        let option = request.arg(i).to_ascii_uppercase();
        let more = request.len() - i - 1;
        match option.as_slice() {
            b"AUTH" if more >= 2 => {
                if request.arg(i + 1) != b"default" {
                    return call
                        .out
                        .error(b"WRONGPASS invalid username-password pair or user is disabled.");
                }
                i += 3;
            }
            b"SETNAME" if more >= 1 => {
                if let Err(error) = set_name(call.session, request.arg(i + 1)) {
                    return call.out.error(error);
                }
                i += 2;
            }
            _ => {
                let text = [b"ERR Syntax error in HELLO option '", request.arg(i), b"'"].concat();
                return call.out.error(&text);
            }
        }
    }
    let out = &mut *call.out;
    out.array(14);
    out.bulk(b"server");
    out.bulk(b"redis");
    // The Redis whose commands and replies this server follows.
    out.bulk(b"version");
    out.bulk(b"7.0.0");
    out.bulk(b"proto");
    out.integer(2);
    out.bulk(b"id");
    out.integer(call.session.id as i64);
    out.bulk(b"mode");
    out.bulk(b"standalone");
    out.bulk(b"role");
    out.bulk(b"master");
    out.bulk(b"modules");
    out.array(0);
}

/// CLIENT ID | SETNAME name | GETNAME | SETINFO attr value.
fn client(call: &mut Call) {
    let request = call.request;
    let sub = request.arg(1).to_ascii_uppercase();
    let argc = request.len();
    match sub.as_slice() {
        b"ID" if argc == 2 => call.out.integer(call.session.id as i64),
        b"SETNAME" if argc == 3 => match set_name(call.session, request.arg(2)) {
            Ok(()) => call.out.simple("OK"),
            Err(error) => call.out.error(error),
        },
        b"GETNAME" if argc == 2 => match &call.session.name {
            Some(name) => call.out.bulk(name),
            None => call.out.null(),
        },
        // Newer clients say who they are; we have nowhere to show it.
        b"SETINFO" if argc == 4 => call.out.simple("OK"),
        b"ID" | b"SETNAME" | b"GETNAME" | b"SETINFO" => {
            let name = format!("client|{}", String::from_utf8_lossy(&sub).to_lowercase());
            arity_error(&name, call.out);
        }
        _ => unknown_subcommand(call),
    }
}

fn client_bound(call: &Call) -> usize {
    SMALL_REPLY + call.session.name.as_ref().map_or(0, |name| name.len())
}

fn set_name(session: &mut Session, name: &[u8]) -> Result<(), &'static [u8]> {
    if name.iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
        return Err(b"ERR Client names cannot contain spaces, newlines or special characters.");
    }
    session.name = (!name.is_empty()).then(|| name.into());
    Ok(())
}
// ANCHOR_END: client_support
// ANCHOR_END: module

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::{parse, Args, Parse, Progress};

    /// Runs inline `line` against `db`; returns the reply.
    fn run(db: &mut Db, line: &str) -> String {
        let input = format!("{line}\r\n");
        let mut args = Args::default();
        let parsed = parse(input.as_bytes(), &mut Progress::default(), &mut args);
        assert!(matches!(parsed, Parse::Request { .. }), "{line}");
        let mut out = Vec::new();
        let request = args.request(input.as_bytes());
        let mut session = Session::default();
        let outcome = execute(request, db, &mut session, &mut out, MAX_REPLIES);
        assert_eq!(outcome, Outcome::Replied);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn every_description_fits_its_bound() {
        for command in COMMANDS {
            let mut out = Vec::new();
            describe(command, &mut out);
            assert!(out.len() <= DESCRIBE_BOUND, "{}", command.name);
        }
    }

    #[test]
    fn a_reply_that_could_not_fit_waits_or_is_refused() {
        let mut db = Db::default();
        let big = vec![b'x'; 100_000];
        db.set(b"big", big.into(), false);
        let input = b"MGET big big big\r\n";
        let mut args = Args::default();
        parse(input, &mut Progress::default(), &mut args);
        let request = args.request(input);
        let mut session = Session::default();
        let mut out = vec![b'.'; 10];
        let room = MAX_REPLIES - out.len();
        assert_eq!(
            execute(request, &mut db, &mut session, &mut out, room),
            Outcome::NoRoom
        );
        assert_eq!(out.len(), 10, "nothing written");
        out.clear();
        execute(request, &mut db, &mut session, &mut out, MAX_REPLIES);
        assert!(out.starts_with(b"-ERR reply would exceed"));
    }

    #[test]
    fn glob_patterns() {
        assert!(glob(b"*", b"save"));
        assert!(glob(b"SAVE", b"save"));
        assert!(glob(b"s?ve", b"save"));
        assert!(glob(b"*only", b"appendonly"));
        assert!(!glob(b"*only", b"save"));
        assert!(!glob(b"sav", b"save"));
    }

    #[test]
    fn incr_keeps_the_deadline_and_refuses_what_is_not_an_integer() {
        let mut db = Db::default();
        assert_eq!(run(&mut db, "SET n 10 EX 100"), "+OK\r\n");
        assert_eq!(run(&mut db, "INCRBY n 5"), ":15\r\n");
        assert_eq!(run(&mut db, "TTL n"), ":100\r\n");
        assert_eq!(run(&mut db, "SET n ' 7'"), "+OK\r\n");
        assert_eq!(
            run(&mut db, "INCR n"),
            "-ERR value is not an integer or out of range\r\n"
        );
    }
}
