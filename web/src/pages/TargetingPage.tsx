import { useState } from "react";
import { Link, Navigate, NavLink, Route, Routes, useNavigate, useParams } from "react-router";
import type { Experience } from "../api/schema.gen";
import {
  experiencePath,
  experienceTypeOf,
  experienceTypes,
  singularOf,
  useDeleteExperience,
  useExperience,
  useExperiencesPage,
} from "../api/targeting";
import { CheckUser } from "../components/CheckUser";
import { ConfirmDialog } from "../components/ConfirmDialog";
import { ErrorNotice } from "../components/ErrorNotice";
import { ExperienceForm } from "../components/ExperienceForm";
import { GuardedButton } from "../components/Guarded";
import { ListStatus } from "../components/ListStatus";
import { ListPager, usePageTokens } from "../components/Pager";
import { when } from "../format";

/** Product tours, checklists and other experiences with their audiences; "check a user". */
export default function TargetingPage() {
  return (
    <section>
      <h1>Targeting</h1>
      <nav className="tabs" aria-label="Targeting sections">
        <ul>
          {experienceTypes.map((t) => (
            <li key={t.slug}>
              <NavLink to={`/targeting/${t.slug}`}>{t.plural}</NavLink>
            </li>
          ))}
          <li>
            <NavLink to="/targeting/check">Check a user</NavLink>
          </li>
        </ul>
      </nav>
      <Routes>
        <Route index element={<Navigate to="tours" replace />} />
        <Route path="check" element={<CheckUser />} />
        <Route path=":typeSlug/new" element={<NewExperience />} />
        <Route path=":typeSlug/:experienceId" element={<EditExperience />} />
        <Route path=":typeSlug" element={<ExperienceList />} />
      </Routes>
    </section>
  );
}

function audienceSummary(e: Experience): string {
  const m = e.audience?.match;
  if (e.audience?.everyone || !m) return "Everyone";
  let n = 0;
  const walk = (g: typeof m) => {
    n += g.conditions?.length ?? 0;
    g.groups?.forEach(walk);
  };
  walk(m);
  return `Custom: ${n} condition${n === 1 ? "" : "s"} (${m.combinator === "COMBINATOR_OR" ? "any" : "all"})`;
}

function ExperienceList() {
  const { typeSlug } = useParams();
  const t = experienceTypeOf(typeSlug);
  const pages = usePageTokens();
  const list = useExperiencesPage(t?.type ?? "EXPERIENCE_TYPE_UNSPECIFIED", pages.token);
  if (!t) return <Navigate to="/targeting/tours" replace />;
  const items = list.data?.experiences ?? [];
  return (
    <>
      <div className="toolbar">
        <h2>{t.plural}</h2>
        <Link className="button primary" to={`/targeting/${t.slug}/new`}>
          New {t.singular}
        </Link>
        {list.isFetching && (
          <span className="muted" role="status">
            Loading…
          </span>
        )}
      </div>
      <ListStatus
        error={list.error}
        empty={!!list.data && items.length === 0 && pages.page === 1}
        title={`No ${t.plural.toLowerCase()} yet.`}
      >
        <p>
          <Link to={`/targeting/${t.slug}/new`}>Create a {t.singular}</Link>, then choose who sees it under Targeting: everyone, or a
          custom audience built from segments and user properties.
        </p>
      </ListStatus>
      {items.length > 0 && (
        <table>
          <thead>
            <tr>
              <th>Name</th>
              <th>Audience</th>
              <th>Live</th>
              <th>Updated</th>
            </tr>
          </thead>
          <tbody>
            {items.map((e) => (
              <tr key={e.experience_id}>
                <td>
                  <Link to={experiencePath(e)}>{e.name}</Link>
                </td>
                <td>{audienceSummary(e)}</td>
                <td>{e.enabled ? "Live" : <span className="muted">Off</span>}</td>
                <td>{when(e.update_time)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <ListPager label={`${t.plural} pages`} pages={pages} list={list} />
    </>
  );
}

function NewExperience() {
  const { typeSlug } = useParams();
  const t = experienceTypeOf(typeSlug);
  const navigate = useNavigate();
  if (!t) return <Navigate to="/targeting/tours" replace />;
  return (
    <>
      <p>
        <Link to={`/targeting/${t.slug}`}>← {t.plural}</Link>
      </p>
      <h2>New {t.singular}</h2>
      <ExperienceForm type={t.type} onSaved={(e) => navigate(experiencePath(e), { replace: true })} />
    </>
  );
}

function EditExperience() {
  const { experienceId = "" } = useParams();
  const got = useExperience(experienceId);
  const e = got.data?.experience;
  const t = experienceTypes.find((x) => x.type === e?.type) ?? experienceTypes[2]!;
  if (got.error) return <ErrorNotice error={got.error} />;
  if (!e) return <p className="loading">Loading…</p>;
  return (
    <>
      <p>
        <Link to={`/targeting/${t.slug}`}>← {t.plural}</Link>
      </p>
      <h2>{e.name}</h2>
      <p className="muted">
        {singularOf(e.type)} · created {when(e.create_time)} · id <code>{e.experience_id}</code>
      </p>
      <ExperienceForm key={e.update_time} experience={e} type={e.type ?? "EXPERIENCE_TYPE_GENERIC"} onSaved={() => {}} />
      <p>
        <Link to="/targeting/check">Check a user against this {singularOf(e.type)} and the others…</Link>
      </p>
      <DeleteExperience experience={e} afterDelete={`/targeting/${t.slug}`} />
    </>
  );
}

function DeleteExperience({ experience, afterDelete }: { experience: Experience; afterDelete: string }) {
  const [open, setOpen] = useState(false);
  const del = useDeleteExperience();
  const navigate = useNavigate();
  return (
    <>
      <h2>Delete</h2>
      <GuardedButton op="TargetingService_DeleteExperience" className="danger" onClick={() => setOpen(true)}>
        Delete {singularOf(experience.type)}…
      </GuardedButton>
      <ConfirmDialog
        title={`Delete ${experience.name}?`}
        open={open}
        onClose={() => setOpen(false)}
        error={del.error}
        confirmLabel="Delete"
        pending={del.isPending}
        onConfirm={() => del.mutate({ path: { experience_id: experience.experience_id ?? "" } }, { onSuccess: () => navigate(afterDelete) })}
      >
        <p>No user is eligible for it from then on, and its audience is gone.</p>
      </ConfirmDialog>
    </>
  );
}
