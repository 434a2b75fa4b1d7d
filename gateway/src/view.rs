//! The listing view itself: joining a page of patients with their first
//! studies. Pure: no I/O, so the join rule is tested on its own.

use std::collections::HashMap;

use clinic_proto::{
    gateway::v1::PatientWithStudies,
    patients::v1::Patient,
    studies::v1::{PatientStudies, Study},
};

/// Pairs each patient with their studies and the token for the rest,
/// keeping the patients' order and putting each patient's studies in id
/// order. Entries of patients not in `patients` are ignored.
pub fn join(patients: Vec<Patient>, studies: Vec<PatientStudies>) -> Vec<PatientWithStudies> {
    let mut by_patient: HashMap<i64, PatientStudies> =
        studies.into_iter().map(|s| (s.patient_id, s)).collect();
    patients
        .into_iter()
        .map(|patient| {
            let entry = by_patient.remove(&patient.id).unwrap_or_default();
            with_studies(patient, entry.studies, entry.next_page_token)
        })
        .collect()
}

/// One patient with `studies` (sorted into id order) and the token for more.
pub fn with_studies(
    patient: Patient,
    mut studies: Vec<Study>,
    next_studies_page_token: String,
) -> PatientWithStudies {
    studies.sort_by_key(|s| s.id);
    PatientWithStudies { patient: Some(patient), studies, next_studies_page_token }
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

    fn entry(patient_id: i64, studies: Vec<Study>, token: &str) -> PatientStudies {
        PatientStudies { patient_id, studies, next_page_token: token.into() }
    }

    #[test]
    fn each_patient_gets_exactly_their_studies_in_id_order_and_their_token() {
        let joined = join(
            vec![patient(1), patient(2), patient(5)],
            vec![
                entry(5, vec![study(9, 5), study(4, 5)], "more-of-5"),
                entry(1, vec![study(3, 1), study(1, 1)], ""),
                entry(99, vec![study(7, 99)], ""),
            ],
        );
        let view: Vec<(i64, Vec<i64>, &str)> = joined
            .iter()
            .map(|p| {
                let ids = p.studies.iter().map(|s| s.id).collect();
                (p.patient.as_ref().unwrap().id, ids, p.next_studies_page_token.as_str())
            })
            .collect();
        assert_eq!(view, vec![(1, vec![1, 3], ""), (2, vec![], ""), (5, vec![4, 9], "more-of-5")]);
    }
}
