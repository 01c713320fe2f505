//! What to tell a user when QEMU refuses their CPU under KVM: said by `check`'s probe and
//! added to QEMU's own message when `run` meets the same failure.

/// What to do when KVM refuses an MSR the CPU model sets (nested hosts, MSRs a kernel does
/// not know).
pub const KVM_REMEDIES: &str = "remedies: let the kernel ignore MSRs it does not know \
     (`echo 1 > /sys/module/kvm/parameters/ignore_msrs`, or kvm.ignore_msrs=1 on the kernel command line), \
     or set another [cpu] model (\"max\", or a named model such as \"Skylake-Client\" or \"EPYC\"), \
     or set [machine] accel = \"tcg\" (software emulation, slow)";

/// What to do when the host's KVM lacks a Hyper-V enlightenment the profile asks for (a nested
/// host, an old kernel): no MSR setting helps there.
pub const HYPERV_REMEDIES: &str = "remedies: this host's KVM does not offer that Hyper-V \
     enlightenment (usual on nested hosts and old kernels): give cpu.hyperv as a list without it \
     (e.g. [\"relaxed\", \"vapic\", \"spinlocks\", \"runtime\", \"reset\", \"frequencies\"]), \
     or set [machine] accel = \"tcg\" (software emulation, slow)";

/// Whether QEMU's stderr is KVM refusing the vCPU's state, the failure the probe finds.
pub fn is_kvm_refusal(stderr: &str) -> bool {
    stderr.contains("failed to set MSR")
        || stderr.contains("kvm_buf_set_msrs")
        || stderr.contains("kvm_arch_put_registers")
        || stderr.contains("kvm_init_vcpu failed")
        || is_hyperv_refusal(stderr)
}

fn is_hyperv_refusal(stderr: &str) -> bool {
    stderr.contains("doesn't allow setting HyperV")
        || stderr.contains("Hyper-V") && stderr.contains("not supported")
}

/// The remedies that fit QEMU's message.
pub fn remedies_for(stderr: &str) -> &'static str {
    if is_hyperv_refusal(stderr) {
        HYPERV_REMEDIES
    } else {
        KVM_REMEDIES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_gets_the_remedies_that_fit_it() {
        let msr = "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69";
        assert!(is_kvm_refusal(msr));
        assert_eq!(remedies_for(msr), KVM_REMEDIES);
        let vp_index = "qemu-system-x86_64: kernel doesn't allow setting HyperV VP_INDEX";
        assert!(is_kvm_refusal(vp_index));
        assert_eq!(remedies_for(vp_index), HYPERV_REMEDIES);
        assert!(!is_kvm_refusal(
            "qemu-system-x86_64: -device foo: 'foo' is not a valid device model name"
        ));
    }
}
