fn main() {
    std::process::exit(vmrun::cli::main());
}
