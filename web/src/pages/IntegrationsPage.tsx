export default function IntegrationsPage() {
  return <h1>Integrations</h1>;
}
