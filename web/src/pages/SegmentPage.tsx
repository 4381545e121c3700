export default function SegmentPage() {
  return <h1>Segment</h1>;
}
