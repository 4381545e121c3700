import { EmptyState } from "../components/EmptyState";

// Placeholder until the Targeting section lands (issue 14); the route and nav entry are in place.
export default function TargetingPage() {
  return (
    <section>
      <h1>Targeting</h1>
      <EmptyState title="This section is not built yet.">
        <p>Use the REST API under /v1 meanwhile (see /openapi.json).</p>
      </EmptyState>
    </section>
  );
}
