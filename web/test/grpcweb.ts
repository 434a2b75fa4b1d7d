// A grpc-web client generated from our protos (protobuf-es + connect-web),
// run under Node by the end-to-end tests: node dist-test/grpcweb.mjs <base URL> <token>.
// Prints what it saw as one JSON object.

import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { GatewayService } from "../src/gen/clinic/gateway/v1/gateway_pb";
import { PatientService } from "../src/gen/clinic/patients/v1/patients_pb";

const [baseUrl, token] = process.argv.slice(2);
const transport = (bearer?: string) =>
  createGrpcWebTransport({
    baseUrl,
    interceptors: [(next) => async (req) => {
      if (bearer) req.header.set("authorization", `Bearer ${bearer}`);
      return next(req);
    }],
  });

const gateway = createClient(GatewayService, transport(token));
const listing = await gateway.listPatientsWithStudies({ pageSize: 4 });
const patients = createClient(PatientService, transport(token));
const first = listing.patients[0]?.patient?.id ?? 0n;
const one = await patients.getPatient({ id: first });
let refused: string | null = null;
try {
  await createClient(PatientService, transport()).getPatient({ id: first });
} catch (e) {
  refused = Code[ConnectError.from(e).code];
}
let missing: { code: string; reason: string | undefined } | null = null;
try {
  await patients.getPatient({ id: 999_999_999n });
} catch (e) {
  const error = ConnectError.from(e);
  missing = { code: Code[error.code], reason: error.details.map((d) => ("type" in d ? d.type : "")).join(",") };
}
console.log(JSON.stringify({
  listing: listing.patients.map((p) => ({ name: `${p.patient?.firstName} ${p.patient?.lastName}`, studies: p.studies.length })),
  getPatient: one.email,
  withoutToken: refused,
  missing,
}));
