//! The listing view itself: joining a page of patients with their studies.
//! Pure: no I/O, so the join rule is tested on its own.

use std::collections::HashMap;

use clinic_proto::{gateway::v1::PatientWithStudies, patients::v1::Patient, studies::v1::Study};

/// Pairs each patient with their studies, keeping the patients' order and
/// putting each patient's studies in id order. Studies of patients not in
/// `patients` are ignored.
pub fn join(patients: Vec<Patient>, studies: Vec<Study>) -> Vec<PatientWithStudies> {
    let mut by_patient: HashMap<i64, Vec<Study>> = HashMap::with_capacity(patients.len());
    for study in studies {
        by_patient.entry(study.patient_id).or_default().push(study);
    }
    patients
        .into_iter()
        .map(|patient| {
            let mut studies = by_patient.remove(&patient.id).unwrap_or_default();
            studies.sort_by_key(|s| s.id);
            PatientWithStudies { patient: Some(patient), studies }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patient(id: i64) -> Patient {
        Patient { id, ..Default::default() }
    }

    fn study(id: i64, patient_id: i64) -> Study {
        Study { id, patient_id, ..Default::default() }
    }

    #[test]
    fn each_patient_gets_exactly_their_studies_in_id_order() {
        let joined = join(
            vec![patient(1), patient(2), patient(5)],
            vec![study(9, 5), study(3, 1), study(4, 5), study(1, 1), study(7, 99)],
        );
        let view: Vec<(i64, Vec<i64>)> = joined
            .iter()
            .map(|p| (p.patient.as_ref().unwrap().id, p.studies.iter().map(|s| s.id).collect()))
            .collect();
        assert_eq!(view, vec![(1, vec![1, 3]), (2, vec![]), (5, vec![4, 9])]);
    }
}
