"""Dashboard API views and the overview page. Thin: parse, call a selector, serialize."""

from __future__ import annotations

from django.http import Http404
from django.shortcuts import render
from django.views.decorators.http import require_safe
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from changes.contexts import OVERVIEW
from changes.models import AUDIENCE_PUBLIC, AUDIENCE_STAFF
from changes.replica import PRIMARY, REPLICA, REPLICA_ERRORS, read_counted, replica_failed
from changes.selectors import change_log_state, recent_changes, state_for_read
from common.errors import InvalidParameter, NotFound
from emissions import selectors
from emissions.models import TOTAL_SORT, VerificationStatus
from emissions.pagination import DashboardCursorPagination
from emissions.serializers import (
    COMPANY_DETAIL_FIELDS,
    CompanyDetailSerializer,
    CompanyListQuerySerializer,
    CompanySerializer,
    FieldsQuerySerializer,
    IndustryBenchmarkSerializer,
    IndustryDetailSerializer,
    IndustrySerializer,
    NoQuerySerializer,
    OverviewQuerySerializer,
    OverviewSerializer,
    PageQuerySerializer,
    RecentChangesQuerySerializer,
    RecentChangesSerializer,
)
from emissions.snapshot_etags import etag_matches, snapshot_etag


class ChangeSeqMixin:
    """Marks a dashboard response with the change-log position it is consistent with.

    The head is read before the data, on the same database: every change published at
    or below it was committed before the data was read, so the response reflects it, and
    a client that applies the changes after `seq` converges on the live state (items
    carry absolute values, so re-applying one the snapshot already shows is harmless).

    The database is `self.read_alias` (changes.selectors.state_for_read): the replica
    when it is fresh enough, that is at least at the `X-Change-Seq-Min` request header
    when a client sends the seq it already holds. A replica that fails during the
    request is left and the primary answers it (newer data than `seq`: harmless).
    """

    read_alias = PRIMARY

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        self.read_alias, state = state_for_read(fresh_through=_seq_min(request))
        self.change_seq, self.change_epoch = state.head_seq, state.epoch
        # The tag follows from the state, so a client that has this snapshot gets its
        # 304 now, before any of the body's queries (emissions/snapshot_etags.py).
        self.etag = snapshot_etag(
            epoch=state.epoch,
            seq=state.head_seq,
            audience="staff" if selectors.user_sees_everything(user=request.user) else "public",
            path=request.path,
            query=list(request.query_params.lists()),
            rows=selectors.industries_fingerprint(using=self.read_alias),
        )
        if etag_matches(request.headers.get("If-None-Match"), self.etag):
            raise _NotModified

    def filter_queryset(self, queryset):
        # The list views' querysets, on the database the head was read from.
        return super().filter_queryset(queryset).using(self.read_alias)

    def handle_exception(self, exc):
        if isinstance(exc, _NotModified):
            return Response(status=304)
        if self.read_alias != REPLICA or not isinstance(exc, REPLICA_ERRORS):
            return super().handle_exception(exc)
        replica_failed(exc)
        self.read_alias = read_counted(PRIMARY)
        state = change_log_state()
        self.change_seq, self.change_epoch = state.head_seq, state.epoch
        try:
            return getattr(self, self.request.method.lower())(
                self.request, *self.args, **self.kwargs
            )
        except Exception as again:
            return super().handle_exception(again)

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        if hasattr(self, "change_seq") and response.status_code in (200, 304):
            response["X-Change-Seq"] = str(self.change_seq)
            response["X-Change-Epoch"] = self.change_epoch
            response["ETag"] = self.etag
            if response.status_code == 200 and isinstance(response.data, dict):
                response.data["seq"] = self.change_seq
                response.data["epoch"] = self.change_epoch
        return response


class _NotModified(Exception):
    """The client holds the snapshot it asks for (If-None-Match): answer 304."""


def _seq_min(request: Request) -> int:
    """The `X-Change-Seq-Min` header: the seq the client already holds (0 when absent)."""
    value = request.headers.get("X-Change-Seq-Min", "").strip()
    if not value:
        return 0
    if not value.isdigit() or len(value) > 18:
        raise InvalidParameter("X-Change-Seq-Min must be a non-negative integer (a seq).")
    return int(value)


# The directory page's orderings, as the API names them, with their labels.
DIRECTORY_ORDERINGS = [
    ("name", "Name, A to Z"),
    ("-name", "Name, Z to A"),
    ("-total_emissions", "Highest emissions first"),
    ("total_emissions", "Lowest emissions first"),
    ("-created_at", "Newest first"),
]


def validated_query(request: Request, serializer_class, **context) -> dict:
    """Validate query parameters; unknown names are refused so typos never pass silently."""
    serializer = serializer_class(data=request.query_params, context=context)
    unknown = sorted(set(request.query_params) - set(serializer.fields))
    if unknown:
        raise InvalidParameter(
            f"Unknown query parameter(s): {', '.join(unknown)}. "
            f"Allowed: {', '.join(sorted(serializer.fields))}."
        )
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


@extend_schema(
    parameters=[
        OpenApiParameter("industry", str, description="industry slug"),
        OpenApiParameter("country", str, description="ISO 3166-1 alpha-2 code"),
        OpenApiParameter("verification_status", str, enum=["pending", "verified", "rejected"]),
        OpenApiParameter("search", str, description="part of the company name"),
        OpenApiParameter(
            "ordering", str, enum=list(CompanyListQuerySerializer.ORDERINGS), default="name"
        ),
        OpenApiParameter("fields", str, description="comma-separated field names"),
        OpenApiParameter("page_size", int, description="1 to 500, default 50"),
    ]
)
class CompanyListView(ChangeSeqMixin, generics.ListAPIView):
    """The company directory."""

    serializer_class = CompanySerializer
    pagination_class = DashboardCursorPagination

    def get_queryset(self):
        params = self.query
        industry = None
        if "industry" in params:
            industry = selectors.industry_get_by_slug(
                slug=params["industry"], using=self.read_alias
            )
            if industry is None:
                raise InvalidParameter(f"Unknown industry: {params['industry']}.")
        companies = selectors.company_list(
            user=self.request.user,
            industry=industry,
            country=params.get("country"),
            verification_status=params.get("verification_status"),
            search=params.get("search"),
        )
        return companies.annotate(total_sort=TOTAL_SORT)

    def get_cursor_ordering(self) -> tuple[str, ...]:
        return CompanyListQuerySerializer.ORDERINGS[self.query["ordering"]]

    def get_serializer_context(self):
        return {**super().get_serializer_context(), "fields": self.query.get("fields")}

    def list(self, request: Request, *args, **kwargs) -> Response:
        self.query = validated_query(request, CompanyListQuerySerializer)
        return super().list(request, *args, **kwargs)


@extend_schema(
    parameters=[OpenApiParameter("fields", str, description="comma-separated field names")],
    responses=CompanyDetailSerializer,
)
class CompanyDetailView(ChangeSeqMixin, APIView):
    """One company: profile and every year of emissions the user may see."""

    def get(self, request: Request, company_id) -> Response:
        query = validated_query(
            request, FieldsQuerySerializer, allowed_fields=COMPANY_DETAIL_FIELDS
        )
        company = selectors.company_get(
            user=request.user, company_id=company_id, using=self.read_alias
        )
        company.visible_records = selectors.company_emission_records(
            user=request.user, company=company
        )
        data = CompanyDetailSerializer(company, context={"fields": query.get("fields")}).data
        return Response(data)


@extend_schema(parameters=[OpenApiParameter("page_size", int)])
class IndustryListView(ChangeSeqMixin, generics.ListAPIView):
    """Industries with their visible company counts."""

    serializer_class = IndustrySerializer
    pagination_class = DashboardCursorPagination

    def get_queryset(self):
        return selectors.industry_list(user=self.request.user)

    def get_cursor_ordering(self) -> tuple[str, ...]:
        return ("slug",)

    def list(self, request: Request, *args, **kwargs) -> Response:
        validated_query(request, PageQuerySerializer)
        return super().list(request, *args, **kwargs)


@extend_schema(responses=IndustryDetailSerializer)
class IndustryDetailView(ChangeSeqMixin, APIView):
    """One industry: totals per year and its benchmarks."""

    def get(self, request: Request, slug: str) -> Response:
        validated_query(request, NoQuerySerializer)
        industry = selectors.industry_get(slug=slug, using=self.read_alias)
        return Response(
            {
                **IndustrySerializer(industry).data,
                **selectors.industry_published_totals(user=request.user, industry=industry),
                "benchmarks": IndustryBenchmarkSerializer(
                    selectors.industry_benchmarks(industry=industry), many=True
                ).data,
            }
        )


@extend_schema(
    parameters=[OpenApiParameter("year", int, description="default: latest year")],
    responses=OverviewSerializer,
)
class OverviewView(ChangeSeqMixin, APIView):
    """Platform totals, totals by industry and the top emitters for one year."""

    def get(self, request: Request) -> Response:
        query = validated_query(request, OverviewQuerySerializer)
        return Response(
            selectors.overview_get(user=request.user, year=query.get("year"), using=self.read_alias)
        )


@extend_schema(
    parameters=[OpenApiParameter("limit", int, description="1 to 50, default 20")],
    responses=RecentChangesSerializer,
)
class RecentChangesView(ChangeSeqMixin, APIView):
    """The newest news of the `overview` context (new companies, major and critical
    changes), as change items, with the names of the companies they concern."""

    def get(self, request: Request) -> Response:
        query = validated_query(request, RecentChangesQuerySerializer)
        audience = (
            AUDIENCE_STAFF if selectors.user_sees_everything(user=request.user) else AUDIENCE_PUBLIC
        )
        items = recent_changes(
            context=OVERVIEW, audience=audience, limit=query["limit"], using=self.read_alias
        )
        company_ids = {
            item["id"] if item["entity"] == "company" else item["fields"].get("company_id")
            for item in items
        }
        company_ids.discard(None)
        companies = selectors.company_names(
            user=request.user, company_ids=sorted(company_ids), using=self.read_alias
        )
        return Response({"changes": items, "companies": companies})


# -- pages: server-rendered shells; the browser client (static/js/) fills them from the
# API above and keeps them live.


@require_safe
def overview_page(request):
    """`/`: platform totals, emissions by industry, top emitters and movers, newest
    companies and recent changes."""
    return render(request, "overview.html", {"page": "overview"})


@require_safe
def directory_page(request):
    """`/companies/`: the searchable, filterable directory."""
    industries = list(selectors.industry_list(user=request.user).order_by("name"))
    return render(
        request,
        "directory.html",
        {
            "page": "directory",
            "industries": industries,
            # Company change items name the industry by slug; the client shows its name.
            "industry_names": {industry.slug: industry.name for industry in industries},
            "statuses": VerificationStatus.choices,
            "orderings": DIRECTORY_ORDERINGS,
        },
    )


@require_safe
def company_page(request, company_id):
    """`/companies/<uuid>/`: one company's profile, emissions and benchmark position."""
    try:
        company = selectors.company_get(user=request.user, company_id=company_id)
    except NotFound as exc:
        raise Http404("No such company.") from exc
    return render(request, "company.html", {"page": "company", "company": company})


@require_safe
def industry_page(request, slug: str):
    """`/industries/<slug>/`: aggregates, benchmarks over time, member companies ranked."""
    industry = selectors.industry_get_by_slug(slug=slug)
    if industry is None:
        raise Http404("No such industry.")
    return render(request, "industry.html", {"page": "industry", "industry": industry})
