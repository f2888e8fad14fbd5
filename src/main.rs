//! The `meterd` command line. anyhow lives here and nowhere else.

mod cli;

fn main() {
    std::process::exit(cli::main());
}
