//! `hearth doctor [--json] [--boot]`: what this host can run, which VMM and accelerator
//! Hearth would pick, tool versions, the default image; `--boot` boots it and times it.
use serde_json::{json, Value};

use crate::cmd_run;

#[derive(clap::Args)]
pub struct Args {
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Boot a VM from the default image, wait for its agent, report boot_ms, destroy it.
    #[arg(long)]
    boot: bool,
}

pub async fn main(args: Args) -> anyhow::Result<i32> {
    let host = hearth_vmm::detect::HostReport::probe();
    let chosen = hearth_vmm::select_from_env();
    let image = cmd_run::default_image_dir();
    let image_present = image.join("vmlinux").exists() && image.join("rootfs.ext4").exists();
    let mut report = json!({
        "kvm_present": host.kvm_present,
        "kvm_usable": host.kvm_usable,
        "kvm_reason": host.kvm_reason,
        "vmm": chosen.as_ref().ok().map(|v| v.kind().to_string()),
        "accel": chosen.as_ref().ok().map(|v| v.accel().to_string()),
        "vmm_error": chosen.as_ref().err().map(|e| e.to_string()),
        "qemu_version": host.qemu_version,
        "firecracker_version": host.firecracker_version,
        "vhost_device_vsock_version": host.vhost_device_vsock_version,
        "image": image.display().to_string(),
        "image_present": image_present,
    });
    // Networking is optional (VMs have no NIC unless asked), so it is reported but does
    // not fail the doctor.
    match hearth_net::NetConfig::from_env() {
        Ok(cfg) => {
            let probe = hearth_net::Network::new(cfg).probe();
            report["network_ok"] = json!(probe.ok());
            report["network"] = json!(probe.summary());
            report["network_checks"] = serde_json::to_value(&probe.checks)?;
        }
        Err(e) => {
            report["network_ok"] = json!(false);
            report["network"] = json!(e.to_string());
        }
    }
    let mut ok = true;
    if args.boot {
        let booted = async {
            let spec = cmd_run::spec_for(&image, 1, 512)?;
            let (vm, took) = cmd_run::boot(&spec).await?;
            let health = vm.agent().health().await;
            let rss = vm.rss_kib();
            vm.destroy().await?;
            anyhow::Ok((took, health?, rss))
        };
        match booted.await {
            Ok((took, health, rss)) => {
                report["agent_ready"] = json!(true);
                report["boot_ms"] = json!(took.as_millis() as u64);
                report["agent_version"] = json!(health.version);
                report["vm_rss_kib"] = json!(rss);
            }
            Err(e) => {
                ok = false;
                report["agent_ready"] = json!(false);
                report["boot_ms"] = Value::Null;
                report["boot_error"] = json!(format!("{e:#}"));
            }
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report);
    }
    Ok(if ok { 0 } else { 1 })
}

fn print_text(r: &Value) {
    let s = |k: &str| match &r[k] {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    let yes = |k: &str| if r[k] == json!(true) { "yes" } else { "no" };
    println!("KVM present:        {}", yes("kvm_present"));
    let why = if r["kvm_reason"].is_null() {
        String::new()
    } else {
        format!(" ({})", s("kvm_reason"))
    };
    println!("KVM usable:         {}{why}", yes("kvm_usable"));
    match r["vmm_error"].as_str() {
        Some(e) => println!("VMM:                none: {e}"),
        None => println!("VMM:                {} (accel {})", s("vmm"), s("accel")),
    }
    println!("qemu:               {}", s("qemu_version"));
    println!("firecracker:        {}", s("firecracker_version"));
    println!("vhost-device-vsock: {}", s("vhost_device_vsock_version"));
    let present = if r["image_present"] == json!(true) {
        ""
    } else {
        " (missing: run `hearth image build`)"
    };
    println!("default image:      {}{present}", s("image"));
    println!(
        "VM networking:      {}: {}",
        yes("network_ok"),
        s("network")
    );
    if !r["agent_ready"].is_null() {
        if r["agent_ready"] == json!(true) {
            println!(
                "boot:               agent ready in {} ms (agent {}, host RSS {} KiB)",
                s("boot_ms"),
                s("agent_version"),
                s("vm_rss_kib")
            );
        } else {
            println!("boot:               FAILED: {}", s("boot_error"));
        }
    }
}
