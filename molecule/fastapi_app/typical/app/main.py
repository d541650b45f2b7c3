import secrets

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.config import settings
from app.core.db import engine
from app.core.security import verify_password
from app.models import User

app = FastAPI(title=settings.PROJECT_NAME, openapi_url="/api/v1/openapi.json")


class Login(BaseModel):
    username: str
    password: str


@app.get("/api/v1/utils/health-check/")
async def health_check() -> bool:
    return True


@app.get("/api/v1/utils/banner/")
async def banner() -> dict[str, str]:
    return {"banner": settings.BANNER}


@app.post("/api/v1/login/access-token")
def login(body: Login) -> dict[str, str]:
    with Session(engine) as session:
        user = session.scalar(select(User).where(User.email == body.username))
    if user is None or not verify_password(body.password, user.hashed_password):
        raise HTTPException(status_code=400, detail="Incorrect email or password")
    return {"access_token": secrets.token_urlsafe(16), "token_type": "bearer"}
