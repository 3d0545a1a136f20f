//! Console logging. The kernel hands PID 1 the console as stdout/stderr; everything goes
//! there with a `hearth-init:` prefix so it stands out among kernel and agent lines.

use std::io::Write;

pub fn say(msg: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "hearth-init: {msg}");
}
