//! Generated Rust types, clients and servers of the Clinic gRPC API.
//!
//! The `.proto` files beside this crate are the single source of the API. This
//! crate compiles them at build time (see `build.rs`) and re-exports each
//! package as a module mirroring its proto package, plus the encoded
//! [`FILE_DESCRIPTOR_SET`] that the services serve through gRPC reflection.
//!
//! # Layout
//! - [`api::v1`] — `clinic.api.v1`: the access option every rpc declares,
//!   collected in [`RPC_ACCESS`]
//! - [`patients::v1`] — `clinic.patients.v1` (PatientService)
//! - [`studies::v1`] — `clinic.studies.v1` (StudyService)
//! - [`gateway::v1`] — `clinic.gateway.v1` (GatewayService)
//! - [`audit::v1`] — `clinic.audit.v1` (AuditService)
//! - [`studies::guard::v1`], [`audit::intake::v1`]
//!   — internal services between Clinic's own processes, not routed by Envoy

/// The encoded `FileDescriptorSet` of every Clinic package and its imports,
/// for registration with a reflection server.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/clinic_descriptor.bin"));

/// Package `clinic.api`: what Clinic declares on its own rpcs.
pub mod api {
    /// Package `clinic.api.v1`: the `(clinic.api.v1.access)` method option.
    #[allow(missing_docs, clippy::all)]
    pub mod v1 {
        tonic::include_proto!("clinic.api.v1");
    }
}

/// The access rule one rpc declares in its `.proto` file
/// (`option (clinic.api.v1.access)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RpcAccess {
    /// The rpc's path, `/package.Service/Method`.
    pub path: &'static str,
    /// The least role that may call it.
    pub role: api::v1::Role,
    /// Whether its calls are audited.
    pub audited: bool,
}

/// The access rule of every Clinic rpc that declares one, read from the
/// descriptor set at build time.
pub const RPC_ACCESS: &[RpcAccess] = include!(concat!(env!("OUT_DIR"), "/access.rs"));

/// Package `clinic.patients`.
pub mod patients {
    /// Package `clinic.patients.v1`: patients and PatientService.
    #[allow(missing_docs, clippy::all)]
    pub mod v1 {
        tonic::include_proto!("clinic.patients.v1");
        /// Fully qualified name of PatientService, as health and reflection use it.
        pub const SERVICE_NAME: &str = "clinic.patients.v1.PatientService";
    }
}

/// Package `clinic.studies`.
pub mod studies {
    /// Package `clinic.studies.guard`.
    pub mod guard {
        /// Package `clinic.studies.guard.v1`: the internal deletion guard of
        /// studies-service (DeletionGuardService), not routed by Envoy.
        #[allow(missing_docs, clippy::all)]
        pub mod v1 {
            tonic::include_proto!("clinic.studies.guard.v1");
            /// Fully qualified name of DeletionGuardService.
            pub const SERVICE_NAME: &str = "clinic.studies.guard.v1.DeletionGuardService";
        }
    }

    /// Package `clinic.studies.v1`: imaging studies and StudyService.
    #[allow(missing_docs, clippy::all)]
    pub mod v1 {
        tonic::include_proto!("clinic.studies.v1");
        /// Fully qualified name of StudyService, as health and reflection use it.
        pub const SERVICE_NAME: &str = "clinic.studies.v1.StudyService";
    }
}

/// Package `clinic.audit`.
pub mod audit {
    /// Package `clinic.audit.intake`.
    pub mod intake {
        /// Package `clinic.audit.intake.v1`: how the gateway records its own
        /// rpcs' audit events in patients-service's trail; not routed by Envoy.
        #[allow(missing_docs, clippy::all)]
        pub mod v1 {
            tonic::include_proto!("clinic.audit.intake.v1");
            /// Fully qualified name of AuditIntakeService.
            pub const SERVICE_NAME: &str = "clinic.audit.intake.v1.AuditIntakeService";
        }
    }

    /// Package `clinic.audit.v1`: the audit trail (AuditService).
    #[allow(missing_docs, clippy::all)]
    pub mod v1 {
        tonic::include_proto!("clinic.audit.v1");
        /// Fully qualified name of AuditService.
        pub const SERVICE_NAME: &str = "clinic.audit.v1.AuditService";
    }
}

/// Package `clinic.gateway`.
pub mod gateway {
    /// Package `clinic.gateway.v1`: the patients-with-studies listing view.
    #[allow(missing_docs, clippy::all)]
    pub mod v1 {
        tonic::include_proto!("clinic.gateway.v1");
        /// Fully qualified name of GatewayService, as health and reflection use it.
        pub const SERVICE_NAME: &str = "clinic.gateway.v1.GatewayService";
    }
}

#[cfg(test)]
mod tests {
    /// The descriptor set keeps every rpc's `google.api.http` option (field
    /// 72295728 of MethodOptions), which Envoy's JSON transcoder reads.
    #[test]
    fn the_descriptor_set_keeps_the_http_routes() {
        let mut tag = Vec::new();
        let mut value: u64 = (72_295_728 << 3) | 2;
        while value >= 0x80 {
            tag.push((value as u8) | 0x80);
            value >>= 7;
        }
        tag.push(value as u8);
        let set = super::FILE_DESCRIPTOR_SET;
        let options = set.windows(tag.len()).filter(|w| *w == tag.as_slice()).count();
        assert!(options >= 14, "only {options} http options in the descriptor set");
        for route in
            ["/v1/patients/{id}", "/v1/studies/{study.id}", "/v1/patientsWithStudies", "/v1/auditEvents"]
        {
            assert!(set.windows(route.len()).any(|w| w == route.as_bytes()), "{route} missing");
        }
    }
}
