from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from app.core.config import settings
from app.core.security import get_password_hash
from app.models import User

engine = create_engine(settings.SQLALCHEMY_DATABASE_URI, pool_pre_ping=True)


def init_db(session: Session) -> None:
    user = session.scalar(select(User).where(User.email == settings.FIRST_SUPERUSER))
    if user is None:
        session.add(
            User(
                email=settings.FIRST_SUPERUSER,
                hashed_password=get_password_hash(settings.FIRST_SUPERUSER_PASSWORD),
                is_superuser=True,
            )
        )
        session.commit()
