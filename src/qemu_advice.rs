//! What to tell a user when QEMU refuses their CPU under KVM: said by `check`'s probe and
//! added to QEMU's own message when `run` meets the same failure.

/// What to do when KVM refuses the CPU: said by `check` and added to QEMU's message by `run`.
pub const KVM_REMEDIES: &str = "remedies: let the kernel ignore MSRs it does not know \
     (`echo 1 > /sys/module/kvm/parameters/ignore_msrs`, or kvm.ignore_msrs=1 on the kernel command line), \
     or set another [cpu] model (\"max\", or a named model such as \"Skylake-Client\" or \"EPYC\"), \
     or set [machine] accel = \"tcg\" (software emulation, slow)";

/// Whether QEMU's stderr is KVM refusing the vCPU's state, the failure the probe finds.
pub fn is_kvm_refusal(stderr: &str) -> bool {
    stderr.contains("failed to set MSR")
        || stderr.contains("kvm_buf_set_msrs")
        || stderr.contains("kvm_arch_put_registers")
        || stderr.contains("kvm_init_vcpu failed")
}
