import { Link, useNavigate } from "react-router";
import { SegmentForm } from "../components/SegmentForm";

/** A new segment: a list, or computed from a rule. */
export default function NewSegmentPage() {
  const navigate = useNavigate();
  return (
    <section>
      <p>
        <Link to="/segments">← Segments</Link>
      </p>
      <h1>New segment</h1>
      <SegmentForm onCreated={(s) => navigate(`/segments/${s.segment_id}`)} />
    </section>
  );
}
