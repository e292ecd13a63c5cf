//! Prints the internal pilot's decisions. See `lib.rs` for how each is made.

fn main() -> std::process::ExitCode {
    match stratai_embed_example::report(stratai_embed_example::pilot_clock()) {
        Ok(text) => {
            print!("{text}");
            std::process::ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
