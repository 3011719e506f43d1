//! The tests of the chapter's exercises (book: "15. A real protocol",
//! Exercises). Each fails on the chapter as it is, and is ignored so that
//! `cargo test` stays green; its solution, `book/solutions/ch17-K.patch`,
//! makes it pass (`just exercise ch17-K` checks it). To try one yourself:
//! `cargo test -p ch17 --test exercises -- --ignored exercise_1`.

mod support;

use support::{start, Redis};

// ANCHOR: exercise_1
/// Exercise 1: TYPE key answers `+string` for a key, `+none` for no key.
#[test]
#[ignore = "exercise ch17-1: TYPE"]
fn exercise_1_type() {
    let server = start(&[]);
    let mut redis = Redis::connect(server.addr);
    assert_eq!(redis.call("SET k v"), "+OK\r\n");
    assert_eq!(redis.call("TYPE k"), "+string\r\n");
    assert_eq!(redis.call("TYPE missing"), "+none\r\n");
    assert_eq!(redis.call("SET gone v PX 1"), "+OK\r\n");
    std::thread::sleep(std::time::Duration::from_millis(5)); // its deadline passes
    assert_eq!(redis.call("TYPE gone"), "+none\r\n");
    assert_eq!(
        redis.call("TYPE"),
        "-ERR wrong number of arguments for 'type' command\r\n"
    );
}
// ANCHOR_END: exercise_1

// ANCHOR: exercise_2
/// Exercise 2: SET's GET option replies with the old value (or null), and
/// a reply that big must be allowed for before the command runs.
#[test]
#[ignore = "exercise ch17-2: SET ... GET"]
fn exercise_2_set_get() {
    let server = start(&[]);
    let mut redis = Redis::connect(server.addr);
    assert_eq!(redis.call("SET k first GET"), "$-1\r\n");
    assert_eq!(redis.call("SET k second GET"), "$5\r\nfirst\r\n");
    assert_eq!(redis.call("SET k third NX GET"), "$6\r\nsecond\r\n");
    assert_eq!(redis.call("GET k"), "$6\r\nsecond\r\n", "NX: not set");
    assert_eq!(redis.call("SET k fourth XX GET EX 100"), "$6\r\nsecond\r\n");
    assert_eq!(redis.call("TTL k"), ":100\r\n");
    let big = "b".repeat(200_000);
    assert_eq!(redis.call(&format!("SET k {big}")), "+OK\r\n");
    // Two replies of 200 KB, pipelined: the second does not fit behind
    // the first, so it must wait for room, and come back whole.
    redis.send(&[support::cmd("GET k"), support::cmd("SET k small GET")].concat());
    assert_eq!(redis.reply().len(), 200_000 + 11);
    assert_eq!(redis.reply().len(), 200_000 + 11);
    assert_eq!(redis.call("GET k"), "$5\r\nsmall\r\n");
}
// ANCHOR_END: exercise_2

// ANCHOR: exercise_3
/// Exercise 3: `--max-keys N` bounds the keyspace: a command that would
/// add a key beyond N gets Redis's out-of-memory error; changing or
/// deleting existing keys still works.
#[test]
#[ignore = "exercise ch17-3: --max-keys"]
fn exercise_3_max_keys() {
    let server = start(&["--max-keys", "2"]);
    let mut redis = Redis::connect(server.addr);
    let oom = "-OOM command not allowed when used memory > 'maxmemory'.\r\n";
    assert_eq!(redis.call("SET a 1"), "+OK\r\n");
    assert_eq!(redis.call("INCR b"), ":1\r\n");
    assert_eq!(redis.call("SET c 1"), oom);
    assert_eq!(redis.call("MSET a 2 c 3"), oom);
    assert_eq!(
        redis.call("MGET a c"),
        "*2\r\n$1\r\n1\r\n$-1\r\n",
        "MSET is all or nothing"
    );
    assert_eq!(redis.call("SET a 2"), "+OK\r\n");
    assert_eq!(redis.call("DEL a"), ":1\r\n");
    assert_eq!(redis.call("SET c 1"), "+OK\r\n");
}
// ANCHOR_END: exercise_3
