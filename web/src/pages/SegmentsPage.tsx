export default function SegmentsPage() {
  return <h1>Segments</h1>;
}
