//! The capped output buffer on its own.

use std::sync::Arc;

use kairos_exec::OutputBuffer;

#[test]
fn small_output_is_kept_whole() {
    let buf = OutputBuffer::new(100);
    buf.push_line("one");
    buf.push_line("two");
    assert_eq!(buf.snapshot(), "one\ntwo\n");
    assert!(!buf.is_truncated());
    assert_eq!(buf.len_written(), 8);
}

#[test]
fn overflow_keeps_head_and_tail_with_a_marker() {
    let buf = OutputBuffer::new(24);
    for i in 0..10 {
        buf.push_line(&format!("line{i}"));
    }
    // Half the limit for the first lines, half for the last ones.
    assert_eq!(
        buf.snapshot(),
        "line0\nline1\n... [36 bytes truncated] ...\nline8\nline9\n"
    );
    assert!(buf.is_truncated());
    assert_eq!(buf.len_written(), 60);
}

#[test]
fn an_overlong_line_keeps_its_start_on_a_char_boundary() {
    let buf = OutputBuffer::new(10);
    buf.push_line("ab");
    // The tail holds 5 bytes: "abc" and the newline; cutting at 4 would split the `é`.
    buf.push_line("abcé-long-line");
    assert_eq!(buf.snapshot(), "ab\n... [12 bytes truncated] ...\nabc\n");
    assert!(buf.is_truncated());
}

#[test]
fn zero_limit_keeps_nothing() {
    let buf = OutputBuffer::new(0);
    buf.push_line("x");
    assert_eq!(buf.snapshot(), "... [2 bytes truncated] ...\n");
}

#[tokio::test]
async fn changed_wakes_on_new_output_and_on_close() {
    let buf = Arc::new(OutputBuffer::new(1000));
    // The version is taken at the call: a line pushed before the first poll is not missed.
    let changed = buf.changed();
    buf.push_line("new");
    changed.await;

    let seen = buf.version();
    let waiter = tokio::spawn({
        let buf = Arc::clone(&buf);
        async move { buf.changed_since(seen).await }
    });
    buf.push_line("newer");
    waiter.await.unwrap();

    let changed = buf.changed();
    buf.close();
    changed.await;
    assert!(buf.is_closed());
    // Closed: resolves at once, whatever version the caller saw.
    buf.changed().await;
    buf.changed_since(0).await;
}
