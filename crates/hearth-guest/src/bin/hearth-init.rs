//! `hearth-init`: PID 1 of a Hearth guest. See `hearth_guest::init`.

fn main() {
    if std::process::id() != 1 {
        eprintln!("hearth-init: must run as PID 1 (the guest's /sbin/init)");
        std::process::exit(2);
    }
    hearth_guest::init::main()
}
